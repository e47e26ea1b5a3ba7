"""Creating and loading containers under a root directory."""

import os
import stat

from . import state as statefile
from . import system
from .configs import Config, NamespaceType
from .container import Container
from .error import ConfigError, CorruptStateError, ExistsError, NotExistError, StateError
from .ids import MAX_ID_LEN, validate_id  # noqa: F401  (MAX_ID_LEN: re-exported)


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
    check_namespace_paths(config)
    if config.cgroups_path or config.systemd_cgroup:
        from .cgroups import inner_path

        inner_path(config.cgroups_path, "id", config.systemd_cgroup)  # a malformed path fails before anything exists


# clone flag (what the NS_GET_NSTYPE ioctl answers) -> OCI namespace name
_NS_KINDS = {0x00020000: "mount", 0x02000000: "cgroup", 0x04000000: "uts", 0x08000000: "ipc", 0x10000000: "user",
             0x20000000: "pid", system.CLONE_NEWNET: "network", 0x00000080: "time"}
_NS_FLAGS = {oci: flag for flag, oci in _NS_KINDS.items()}
_NS_FILES = {"network": "net", "mount": "mnt"}  # /proc/<pid>/ns/ names that differ from the OCI ones


def check_namespace_paths(config: Config) -> None:
    """Each namespace to join must be a namespace file of its type.

    Checked before anything is created: otherwise the init's setns(2) fails
    with a bare EINVAL (or the path's absence is only noticed in the child).
    """
    for ns in config.namespaces:
        if ns.path:
            check_namespace_path(NamespaceType.INFO[ns.type][0], ns.path)


def check_namespace_path(oci: str, path: str) -> None:
    """`path` must be a namespace file of the OCI namespace type `oci` (config-linux requires it even of a
    namespace the runtime does not set up itself)."""
    flag = _NS_FLAGS.get(oci)
    if flag is None:
        return  # a type the kernel has no namespace file for: nothing to compare
    what = f"{oci} namespace path {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot use {what}: {e.strerror}") from None
    hint = f"expected a namespace file such as /proc/<pid>/ns/{_NS_FILES.get(oci, oci)}"
    if not stat.S_ISREG(st.st_mode):  # nsfs files are regular; never open a fifo or a device here
        raise ConfigError(f"{what} is not a namespace file ({hint})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise ConfigError(f"cannot open {what}: {e.strerror}") from None
    try:
        kind = system.ns_get_type(fd)
    except OSError:
        raise ConfigError(f"{what} is not a namespace file ({hint})") from None
    finally:
        os.close(fd)
    if kind != flag:
        raise ConfigError(f"{what} is a {_NS_KINDS.get(kind, f'{kind:#x}')} namespace, not a {oci} namespace")


def _ensure_root(root: str) -> None:
    """The state root exists, is ours and is reachable by us alone (0700), whatever the umask and whatever
    mode a root that already existed had: the VMMs' control sockets live below it."""
    try:
        os.makedirs(root, 0o700, exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise StateError(f"cannot create the state root {root}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise StateError(f"the state root {root} belongs to user {st.st_uid}, not to this user "
                             f"({os.geteuid()}); give a --root of this user's own")
        if st.st_mode & 0o7777 != 0o700:
            os.fchmod(fd, 0o700)
    except OSError as e:
        raise StateError(f"cannot make the state root {root} private: {e.strerror}") from None
    finally:
        os.close(fd)


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
    except OSError as e:
        raise StateError(f"cannot create the directory of container {id!r} in {root}: {e.strerror}") from None
    os.chmod(path, 0o711)
    return Container(root, id, config)


def load(root: str, id: str) -> Container:
    """A container from its saved state.json."""
    validate_id(id)
    root = os.path.abspath(root)
    path = os.path.join(root, id)
    if os.path.islink(path):
        # Something planted in the root: never read (or later signal) what it points at.
        raise NotExistError(f"container {id!r} does not exist ({path} is a symlink, not a container directory)")
    try:
        st = statefile.read(path)
    except FileNotFoundError:
        raise NotExistError(f"container {id!r} does not exist") from None
    except (ValueError, OSError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e)
        raise CorruptStateError(f"container {id!r} has an unreadable {path}/{statefile.STATE_FILE}: {why}") from None
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


class Lock:
    """An exclusive flock(2) on a container's directory: operations on one container serialise.

    The directory itself is locked (flock works on directories), so nothing is left behind when the
    container is deleted. A waiter that gets the lock after the directory was removed (or replaced by
    a new container of the same id) sees a different inode and retries or reports the container gone.
    The lock is released explicitly (LOCK_UN) so that a process forked while it was held (the init)
    never keeps it.
    """

    def __init__(self, root: str, id: str) -> None:
        validate_id(id)
        self.path = os.path.join(os.path.abspath(root), id)
        self.id = id
        self.fd = -1

    def acquire(self) -> "Lock":
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                raise NotExistError(f"container {self.id!r} does not exist") from None
            except OSError as e:
                if e.errno == 40:  # ELOOP: a symlink planted in the root is no container
                    raise NotExistError(f"container {self.id!r} does not exist") from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                a = os.fstat(fd)
                try:
                    b = os.lstat(self.path)
                except FileNotFoundError:
                    b = None
            except BaseException:
                os.close(fd)
                raise
            if b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                self.fd = fd
                return self
            os.close(fd)  # removed (or replaced) while we waited
            if b is None:
                raise NotExistError(f"container {self.id!r} does not exist")

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "Lock":
        return self if self.fd >= 0 else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock(root: str, id: str) -> Lock:
    """`with factory.lock(root, id):` holds the container's lock (NotExistError when it has no directory)."""
    return Lock(root, id).acquire()
