"""Errors raised by mocktainer.

One class per condition a caller may want to tell apart; all share `Error` so a
command line can turn any of them into one line for the user.
"""


class Error(Exception):
    """Base class of every error mocktainer raises on purpose."""


class ExistsError(Error):
    """A container with this id already exists under the root."""


class InvalidIDError(Error):
    """The container id is not usable as a directory name."""


class NotExistError(Error):
    """No container with this id exists under the root."""


class RunningError(Error):
    """The operation needs a container that is not running."""


class NotRunningError(Error):
    """The operation needs a created or running container."""


class ConfigError(Error):
    """The container configuration (or the OCI spec it came from) is invalid."""


class InitError(Error):
    """The container init reported a failure; the message is the init's own."""


class HookError(Error):
    """A lifecycle hook failed or ran past its timeout."""


class CgroupError(Error):
    """The container's cgroup could not be created, or could not be removed (processes still in it)."""
