"""Errors raised by mocktainer, and where its warnings go.

One class per condition a caller may want to tell apart; all share `Error` so a
command line can turn any of them into one line for the user.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable


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


class StateError(Error):
    """state.json could not be written (a full disk, a read-only root); the old file, if any, is intact."""


class CorruptStateError(StateError):
    """The container's directory exists but its state.json cannot be read (not a file runu wrote)."""


class CgroupError(Error):
    """The container's cgroup could not be created, or could not be removed (processes still in it)."""


# Where warnings go. None: the `mocktainer` logger (logging is imported only then).
# runu points it at its own output: stderr and the --log file.
warning_sink: "Callable[[str], None] | None" = None


# Where the container init's log lines (level, message) go. None: the `mocktainer.init` logger.
# runu points it at its --log file, so `--debug` shows what the init did.
log_sink: "Callable[[str, str], None] | None" = None


def warn(msg: str) -> None:
    """Report a problem that does not stop the operation: a failed poststart or poststop
    hook, a cgroup limit the kernel refused."""
    if warning_sink is not None:
        warning_sink(msg)
        return
    import logging

    logging.getLogger("mocktainer").warning("%s", msg)
