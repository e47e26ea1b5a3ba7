"""Typed wrappers around the raw Linux calls the standard library lacks.

Everything that needs `setns`, `unshare`, `mount`, `prctl`, `keyctl` or an ioctl goes
through here, so the rest of the package never touches ctypes or fcntl.ioctl; so do the
loops over read(2)/write(2) (write_all, atomic_write, read_regular).
The C library is reached through `_ctypes`, the extension module under ctypes, loaded on first
use only: `runu state` never pays for it, and `import ctypes` (its whole zoo of types) would
add about 2.5 ms to the init's part of every create. Python 3.12's os.setns and os.unshare are
used where they exist."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "armv7l": 311, "armv8l": 311}
KEYCTL_JOIN_SESSION_KEYRING = 1

NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux 4.11
TIOCSCTTY = 0x540E
KVM_GET_API_VERSION = 0xAE00
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

class _LibC:
    """The C library's functions by name (`_c().unshare(...)`): errno kept per call, an int result unless
    told otherwise, and the few C types the wrappers pass, made from _ctypes' base classes."""

    def __init__(self) -> None:
        import _ctypes as loaded

        _ctypes: Any = loaded  # its private names are what ctypes itself is built on

        def scalar(code: str) -> Any:
            return type(f"c_{code}", (_ctypes._SimpleCData,), {"_type_": code})

        self.int, self.long, self.ulong, self.uint64, self.char_p = (scalar(code) for code in "ilLQz")

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = self.int

        self._function = Function
        self._handle = _ctypes.dlopen(None, os.RTLD_NOW)  # this process' own symbols: libc's among them
        self.byref, self.sizeof, self.get_errno = _ctypes.byref, _ctypes.sizeof, _ctypes.get_errno
        self._array = _ctypes.Array
        self.syscall = Function(("syscall", self))
        self.syscall.restype = self.long

    def __getattr__(self, name: str) -> Any:
        function = self._function((name, self))  # (name, an object with `_handle`): dlsym
        setattr(self, name, function)
        return function

    def array(self, ctype: Any, values: list[int]) -> Any:
        return type("array", (self._array,), {"_type_": ctype, "_length_": len(values)})(*values)


_libc: _LibC | None = None


def _c() -> _LibC:
    global _libc
    if _libc is None:
        _libc = _LibC()
    return _libc


def load_libc() -> None:
    """Bind the C library now, before a fork whose child will call these wrappers."""
    _c()


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = _c().get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace `fd` refers to."""
    if hasattr(os, "setns"):  # Python 3.12
        os.setns(fd, nstype)
    else:
        _check(_c().setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12
        os.unshare(flags)
    else:
        _check(_c().unshare(flags), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = _c()

    def enc(v: str | None) -> object:
        return libc.char_p(v.encode()) if v is not None else None

    _check(libc.mount(enc(source), enc(target), enc(fstype), libc.ulong(flags), enc(data)), f"mount {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_c().umount2(target.encode(), flags), f"umount {target}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    libc = _c()
    ul = libc.ulong
    return _check(libc.prctl(option, ul(arg2), ul(arg3), ul(arg4), ul(arg5)), "prctl")


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def die_with_parent(parent: int) -> None:
    """In a child between fork and exec: SIGKILL when `parent` dies (already dead: exit now)."""
    set_pdeathsig(9)
    if os.getppid() != parent:
        os._exit(1)


def single_threaded() -> bool:
    """Forking is only safe (no lock held by another thread in the child) with one thread."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Threads:"):
                return line.split()[1] == b"1"
    return False


def set_child_subreaper() -> None:
    """Adopt orphaned descendants so they can be reaped here (PID 1 may not)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def join_session_keyring(name: str) -> int:
    """Join (creating if needed) a session keyring named `name`; returns its serial."""
    nr = _SYS_KEYCTL.get(os.uname().machine)
    if nr is None:
        raise OSError(38, "keyctl: unknown system call number on this architecture")
    libc = _c()
    ret = libc.syscall(libc.long(nr), libc.long(KEYCTL_JOIN_SESSION_KEYRING), libc.char_p(name.encode()))
    return _check(ret, "keyctl(JOIN_SESSION_KEYRING)")


def keyring_name(container_id: str) -> str:
    """The session keyring's name for a container: prefixed (like runc's `_ses.`), so that every valid id
    works, those starting with '.' too (a name the kernel keeps for its own keyrings)."""
    return "_ses." + container_id


# ---- ioctls ----------------------------------------------------------------------------

def ns_get_type(fd: int) -> int:
    """The clone flag of the namespace file open at `fd` (OSError when it is none)."""
    import fcntl

    return fcntl.ioctl(fd, NS_GET_NSTYPE)


def set_controlling_tty(fd: int) -> None:
    """Make the terminal at `fd` the calling session leader's controlling terminal."""
    import fcntl

    fcntl.ioctl(fd, TIOCSCTTY, 0)


def kvm_api_version(fd: int) -> int:
    """What /dev/kvm open at `fd` answers KVM_GET_API_VERSION (12 on every kernel since 2.6.22)."""
    import fcntl

    return fcntl.ioctl(fd, KVM_GET_API_VERSION)


def make_persistent_tap(name: str) -> None:
    """Create the tap device `name` (with virtio-net headers), left in place when our fd closes."""
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


# ---- files: the one copy of each loop over read(2)/write(2) ------------------------------

def write_all(fd: int, data: bytes) -> None:
    """write(2) until all of `data` is written (a pipe or a socket may take less per call)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_tmp_serial = 0


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never a torn one.

    Through a temporary file of a name unique to this process and call (O_EXCL: never someone else's),
    renamed over `path`; on any failure the temporary file is gone and `path` is untouched. Not fsynced
    (as runc and crun do not): what is written here (state.json, pid files) describes processes that a
    power loss ends anyway, and the rename alone keeps concurrent readers from a torn file; a sync cost
    up to several ms of every `create` on a disk-backed /run.
    """
    global _tmp_serial
    _tmp_serial += 1
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{_tmp_serial}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_regular(path: str, limit: int, follow: bool = True) -> bytes:
    """The content of the regular file at `path`, at most `limit` bytes.

    Opened without blocking (a FIFO or a device at `path` never hangs the caller) and checked with fstat
    on the open fd, so what is read is what was checked. ValueError says what else it is, or that it is
    larger than `limit`; OSError as open(2) reports it.
    """
    import stat

    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
                    stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "special")
            raise ValueError(f"is {kind}, not a regular file")
        chunks = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"is larger than {limit} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks)


SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall tables were unified)
RESOLVE_NO_SYMLINKS = 0x04
AT_FDCWD = -100


def open_no_symlinks(path: str, flags: int) -> int:
    """openat2(2) with RESOLVE_NO_SYMLINKS: no component of `path` may be a symbolic link (ELOOP)."""
    libc = _c()
    how = libc.array(libc.uint64, [flags, 0, RESOLVE_NO_SYMLINKS])
    ret = libc.syscall(libc.long(SYS_OPENAT2), libc.int(AT_FDCWD), libc.char_p(path.encode()), libc.byref(how),
                       libc.ulong(libc.sizeof(how)))
    return _check(ret, f"openat2 {path}")


def link_up(name: str) -> None:
    """Set IFF_UP on an interface with the classic ioctl: no netlink library needed for `lo`."""
    import _socket
    import fcntl
    import struct

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH22x", name.encode(), 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP))
    finally:
        s.close()


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, parent pid, start time in clock ticks) of `pid`, or None if it is gone.

    The start time tells a live process from a later one that reused its pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1]), int(rest[19])


def proc_start_time(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of `pid`, or None if it is gone."""
    st = proc_stat(pid)
    return None if st is None else (st[0], st[2])


# The command name the init gives itself (at most 15 bytes): until its exec, /proc/<pid>/comm says it
# is still the init, whatever exec.fifo says (a `start` killed mid-way cannot unlink the fifo).
INIT_COMM = b"mocktainer-init"
# ... and the name it takes once the process it supervises (instead of exec'ing it) was resumed.
SUPERVISOR_COMM = b"mocktainer-sv"


def set_comm(name: bytes) -> None:
    """prctl(PR_SET_NAME) without ctypes: the same through /proc."""
    fd = os.open("/proc/thread-self/comm", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, name)
    finally:
        os.close(fd)


def proc_comm(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n")
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]
