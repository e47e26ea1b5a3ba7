"""Creating and loading containers under a root directory."""

import os

from . import state as statefile
from .configs import Config
from .container import Container
from .error import ConfigError, ExistsError, InvalidIDError, NotExistError

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.")
MAX_ID_LEN = 255  # the id names a directory; NAME_MAX is 255 bytes


def validate_id(id: str) -> None:
    if not isinstance(id, str) or not id:
        raise InvalidIDError("invalid container id: it must not be empty")
    if id in (".", ".."):
        raise InvalidIDError(f"invalid container id {id!r}")
    if len(id) > MAX_ID_LEN:
        raise InvalidIDError(f"invalid container id: {len(id)} characters long; at most {MAX_ID_LEN} are allowed")
    bad = set(id) - _ID_CHARS
    if bad:
        raise InvalidIDError(
            f"invalid container id {id!r}: only letters, digits and '_', '+', '-', '.' are allowed (found {''.join(sorted(bad))!r})"
        )


def validate_config(config: Config) -> None:
    rootfs = config.rootfs
    if not rootfs:
        raise ConfigError("rootfs is not set")
    if not os.path.isabs(rootfs):
        raise ConfigError(f"rootfs {rootfs!r} is not an absolute path")
    if os.path.islink(rootfs):
        raise ConfigError(f"rootfs {rootfs} is a symlink; give the real path")
    if not os.path.isdir(rootfs):
        raise ConfigError(f"rootfs {rootfs} does not exist or is not a directory")


def _ensure_root(root: str) -> None:
    try:
        os.mkdir(root, 0o700)
        os.chmod(root, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
        _ensure_root(root)


def create(root: str, id: str, config: Config) -> Container:
    """Make the container's directory (atomically: of two racing creators one gets ExistsError)."""
    validate_id(id)
    validate_config(config)
    root = os.path.abspath(root)
    _ensure_root(root)
    path = os.path.join(root, id)
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        raise ExistsError(f"container {id!r} already exists") from None
    os.chmod(path, 0o711)
    return Container(root, id, config)


def load(root: str, id: str) -> Container:
    """A container from its saved state.json."""
    validate_id(id)
    root = os.path.abspath(root)
    path = os.path.join(root, id)
    try:
        st = statefile.read(path)
    except FileNotFoundError:
        raise NotExistError(f"container {id!r} does not exist") from None
    except ValueError as e:
        raise NotExistError(f"container {id!r} has an unreadable state.json ({e})") from None
    return Container(root, id, st.config, st)


def list_ids(root: str) -> list[str]:
    """Ids of the containers under `root` that have saved state."""
    try:
        entries = os.scandir(root)
    except FileNotFoundError:
        return []
    with entries:
        return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False)
                      and os.path.exists(os.path.join(e.path, statefile.STATE_FILE)))
