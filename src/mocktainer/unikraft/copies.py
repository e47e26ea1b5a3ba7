"""Read-only copies of the mounts, made at create for a VMM that cannot share host files (Firecracker).

Firecracker has no shared file system (no virtio-fs, no 9p), so runu copies what a read-only mount holds
when the container is created (the rules, which mounts, and why writable ones are refused:
mounts.firecracker_shares and docs/bundles.md):

- a Unikraft guest gets a new initrd (`merge_initrd`): the bundle's own entries, less those a mount
  hides, plus each mount's files at their destination; its `vfs.fstab` mounts it on `/`;
- a Linux guest gets one ext4 image (`ext4_image`, made by `mkfs.ext4 -d` from a staging copy, no
  loop mount): a directory per share, named by its tag, which Firecracker attaches as a read-only
  drive and the guest's init mounts (`runu.disk=`, see mounts.linux_params).

Reading a source reaches nothing outside it (`collect`): the source is the object create checked
(mounts._open_checked: no symlink on the way, still a directory or a regular file), everything below is
opened relative to its directory with O_PATH|O_NOFOLLOW and read through that very fd, a symlink is
copied as a symlink (the guest resolves it in its own file tree), devices, FIFOs and sockets are left
out, and the whole copy is bounded (`limit`: a clear error past it). Hard links become separate files.
What the guest sees is frozen at create: a change of the source, or a source swapped for a link between
create and start, reaches nothing.
"""

from __future__ import annotations

import os
import stat

from mocktainer.error import ConfigError
from mocktainer.unikraft import cpio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mocktainer.unikraft.kernel import Kernel
    from mocktainer.unikraft.mounts import Share

MIB = 1 << 20
# The most runu copies for one container (the state directory is on /run, in RAM, and the copy is built
# in runu's memory): past it, create fails and the message points to QEMU, which shares the files.
MAX_COPY_MIB = 256
INITRD_FILE = "initrd.cpio"
DISK_FILE = "mounts.ext4"
DISK_LABEL = "runu-mounts"
MKFS = "mkfs.ext4"
_BLOCK = 4096
_HINT = "use QEMU (annotation org.unikraft.runu.vmm=qemu), which shares the host's files instead of copying them"


class _Budget:
    """What is left of `limit` bytes (`used` of them taken already) for the copy of `what`."""

    def __init__(self, limit: int, what: str, used: int = 0) -> None:
        self.left = limit - used
        self.limit = limit
        self.what = what

    def charge(self, n: int, path: str) -> None:
        self.left -= n
        if self.left < 0:
            raise ConfigError("the copy of the mounts for %s is larger than %d MiB (at %s): %s"
                              % (self.what, self.limit // MIB, path, _HINT))


def _entry(name: str, st: os.stat_result, data: bytes = b"") -> cpio.Entry:
    return cpio.Entry(name, st.st_mode, data, uid=st.st_uid, gid=st.st_gid,
                      nlink=2 if stat.S_ISDIR(st.st_mode) else 1, mtime=max(0, int(st.st_mtime)))


def _read(fd: int, st: os.stat_result, path: str, budget: _Budget) -> bytes:
    """The content of the regular file open (O_PATH) on `fd` (`st` its fstat), within `budget`."""
    from mocktainer import system

    budget.charge(st.st_size, path)
    try:
        data = system.read_regular("/proc/self/fd/%d" % fd, st.st_size + max(0, budget.left))
    except ValueError as e:
        raise ConfigError("mount source %s %s (while runu copied it)" % (path, e)) from None
    except OSError as e:
        raise ConfigError("mount source %s: %s" % (path, e.strerror)) from None
    budget.charge(len(data) - st.st_size, path)
    return data


def collect(share: Share, base: str, budget: _Budget) -> list[cpio.Entry]:
    """The files of `share` as cpio entries, named under `base` (a relative path; "" for the top): a
    directory share as the tree `base/...` (its top directory `base` included), a group of files as
    `base/<name>` each (see the module doc for what is read and how)."""
    from mocktainer.unikraft.mounts import _open_checked

    out: list[cpio.Entry] = []
    if share.source is None:
        for name, source, _ro in share.files:
            fd = _open_checked(source, False)
            try:
                st = os.fstat(fd)
                budget.charge(cpio.HEADER_SIZE + len(base) + len(name) + 8, source)
                out.append(_entry(_join(base, name), st, _read(fd, st, source, budget)))
            finally:
                os.close(fd)
        return out
    top = _open_checked(share.source, True)
    try:
        _tree(top, share.source, base, budget, out)
    finally:
        os.close(top)
    return out


def _join(base: str, name: str) -> str:
    return base + "/" + name if base else name


# Deeper trees are refused (each level holds one fd while it is walked).
MAX_DEPTH = 128


def _tree(top: int, source: str, base: str, budget: _Budget, out: list[cpio.Entry]) -> None:
    """`out` += the directory open (O_PATH) on `top` and the tree below it, named under `base`, parents
    first."""
    budget.charge(cpio.HEADER_SIZE + len(base) + 8, source)
    out.append(_entry(base, os.fstat(top)))
    _walk(top, source, base, budget, out, 0)


def _walk(dfd: int, path: str, name: str, budget: _Budget, out: list[cpio.Entry], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ConfigError("mount source %s: deeper than %d directories, more than runu copies: %s"
                          % (path, MAX_DEPTH, _HINT))
    listing = os.open("/proc/self/fd/%d" % dfd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        children = sorted(os.listdir(listing))
    finally:
        os.close(listing)
    for child in children:
        sub = _child(dfd, child, os.path.join(path, child), _join(name, child), budget, out)
        if sub is not None:
            try:
                _walk(sub, os.path.join(path, child), _join(name, child), budget, out, depth + 1)
            finally:
                os.close(sub)


def _child(dfd: int, child: str, path: str, name: str, budget: _Budget, out: list[cpio.Entry]) -> int | None:
    """One directory entry: appended to `out` (a subdirectory: its fd returned, to be walked and closed),
    or left out."""
    try:
        fd = os.open(child, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return None  # gone since the listing
    except OSError as e:
        raise ConfigError("mount source %s: %s" % (path, e.strerror)) from None
    keep = False
    try:
        st = os.fstat(fd)
        budget.charge(cpio.HEADER_SIZE + len(name) + 8, path)
        if stat.S_ISDIR(st.st_mode):
            out.append(_entry(name, st))
            keep = True
            return fd
        if stat.S_ISREG(st.st_mode):
            out.append(_entry(name, st, _read(fd, st, path, budget)))
        elif stat.S_ISLNK(st.st_mode):
            target = os.fsencode(os.readlink("", dir_fd=fd))  # the link that was opened (readlinkat(fd, ""))
            budget.charge(len(target), path)
            out.append(_entry(name, st, target))
        # a device, FIFO or socket: left out (the guest has its own)
        return None
    finally:
        if not keep:
            os.close(fd)


def _rel(path: str) -> str:
    """A cpio or destination path as the guest's path without the leading "/" (and "./")."""
    while path.startswith("./"):
        path = path[2:]
    return os.path.normpath("/" + path).lstrip("/")


def _under(name: str, dests: set[str]) -> bool:
    return any(name == d or name.startswith(d + "/") for d in dests)


def _destinations(s: Share) -> set[str]:
    """Where share `s` lands (relative paths): its destination, or each of its files'."""
    base = _rel(s.dest)
    return {base} if s.source is not None else {_join(base, f[0]) for f in s.files}


def mount_entries(items: list[Share], budget: _Budget) -> list[cpio.Entry]:
    """The entries of `items` at their destinations (a later mount on or above a path replaces what an
    earlier one put there, as a mount hides what is below it), parents first."""
    placed: dict[str, cpio.Entry] = {}
    for s in items:
        dests = _destinations(s)
        for name in [n for n in placed if _under(n, dests)]:
            del placed[name]
        for e in collect(s, _rel(s.dest), budget):
            placed[e.name] = e
    return [placed[n] for n in sorted(placed, key=lambda n: n.split("/"))]


def read_initrd(kernel: Kernel, limit: int, what: str) -> bytes | None:
    """The bundle's initrd (None without one): the file find_kernel checked when it is still open
    (`kernel.fds`), else its path opened without following a link; ConfigError past `limit` bytes."""
    from mocktainer import system

    if not kernel.initrd:
        return None
    fd = kernel.fds[1] if kernel.fds else None
    path = "/proc/self/fd/%d" % fd if fd is not None else kernel.initrd
    try:
        return system.read_regular(path, limit, follow=fd is not None)
    except ValueError as e:
        raise ConfigError("the bundle's initrd %s %s, the most %s can take with the mounts: %s"
                          % (kernel.initrd, e, what, _HINT)) from None
    except OSError as e:
        raise ConfigError("cannot read the bundle's initrd %s: %s" % (kernel.initrd, e.strerror)) from None


def merge_initrd(base: bytes | None, items: list[Share], limit: int, what: str = "the initrd") -> bytes:
    """A newc initrd: the entries of `base` (the bundle's initrd, None for none) that no mount hides, the
    directories the mounts need that it lacks (0755), then the mounts' files (`mount_entries`); at most
    `limit` bytes (ConfigError past it). `base` must be an uncompressed newc archive (what Unikraft
    extracts)."""
    kept: list[cpio.Entry] = []
    if base:
        try:
            kept = cpio.read(base)
        except ValueError as err:
            raise ConfigError("the bundle's initrd cannot take the mounts: %s (runu merges mounts into an "
                              "uncompressed newc cpio initrd only); %s" % (err, _HINT)) from None
    budget = _Budget(limit, what, len(base or b""))
    ours = mount_entries(items, budget)
    dests = set().union(*(_destinations(s) for s in items))
    kept = [e for e in kept if not (_rel(e.name) and _under(_rel(e.name), dests))]
    kinds = {_rel(e.name): e.kind for e in kept}
    kinds.update((e.name, e.kind) for e in ours)
    parents: list[cpio.Entry] = []
    for e in ours:
        parts = e.name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            kind = kinds.get(p)
            if kind is None:
                kinds[p] = stat.S_IFDIR
                parents.append(cpio.Entry(p, stat.S_IFDIR | 0o755, nlink=2))
            elif kind != stat.S_IFDIR:
                raise ConfigError("the bundle's initrd has /%s, which is not a directory, where a mount needs "
                                  "one (for /%s)" % (p, e.name))
    ino = max([e.ino for e in kept] + [0]) + 1
    w = cpio.Writer()
    for e in kept:
        w.add(e)
    for e in sorted(parents, key=lambda e: e.name.split("/")) + ours:
        e.ino, ino = ino, ino + 1
        w.add(e)
    data = w.finish()
    if len(data) > limit:
        raise ConfigError("the initrd with the mounts merged in would be %d MiB, more than %s allows (%d MiB): %s"
                          % (-(-len(data) // MIB), what, limit // MIB, _HINT))
    return data


# -- the ext4 image for a Linux guest -------------------------------------------------------------------

def _stage(root: str, e: cpio.Entry) -> None:
    """`e` written below the staging directory `root` (owner, mode and mtime kept)."""
    path = os.path.join(root, e.name)
    kind = e.kind
    if kind == stat.S_IFDIR:
        os.makedirs(path, mode=0o700, exist_ok=True)
    elif kind == stat.S_IFLNK:
        os.symlink(os.fsdecode(e.data), path)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            from mocktainer import system

            system.write_all(fd, e.data)
        finally:
            os.close(fd)
    os.chown(path, e.uid, e.gid, follow_symlinks=False)
    if kind != stat.S_IFLNK:
        os.chmod(path, stat.S_IMODE(e.mode))
    os.utime(path, (e.mtime, e.mtime), follow_symlinks=False)


def _image_size(entries: list[cpio.Entry]) -> int:
    """A size (bytes) that holds `entries` in ext4 with 4 KiB blocks and 256-byte inodes, with room for
    the metadata."""
    blocks = sum(-(-len(e.data) // _BLOCK) + (1 if e.kind == stat.S_IFDIR else 0) for e in entries)
    raw = (blocks * _BLOCK + len(entries) * 256) * 5 // 4 + 2 * MIB
    return -(-raw // MIB) * MIB


def ext4_image(items: list[Share], limit: int, mkfs: str, what: str = "the guest's disk") -> bytes:
    """A read-only-to-be ext4 image (bytes) holding a top directory per share, named by its tag: a
    directory share's tree, or a group's files. Made with `mkfs` (mkfs.ext4) `-d` from a staging copy in a
    temporary directory; the copy is at most `limit` bytes (ConfigError past it)."""
    import subprocess
    import tempfile

    budget = _Budget(limit, what)
    entries: list[cpio.Entry] = []
    for s in items:
        if s.source is None:
            entries.append(cpio.Entry(s.tag, stat.S_IFDIR | 0o755, nlink=2))
        entries += collect(s, s.tag, budget)
    with tempfile.TemporaryDirectory(prefix="runu-mounts-") as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root, 0o755)
        for e in entries:
            _stage(root, e)
        for e in reversed(entries):  # directories' times again, after their children were written
            if e.kind == stat.S_IFDIR:
                os.utime(os.path.join(root, e.name), (e.mtime, e.mtime))
        image = os.path.join(tmp, DISK_FILE)
        size = _image_size(entries)
        for _attempt in range(4):
            with open(image, "wb") as f:
                f.truncate(size)
            argv = [mkfs, "-q", "-F", "-L", DISK_LABEL, "-b", str(_BLOCK), "-I", "256", "-m", "0",
                    "-N", str(len(entries) + 32), "-O", "^has_journal,^resize_inode",
                    "-E", "root_owner=0:0,nodiscard", "-d", root, image]
            run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if run.returncode == 0:
                with open(image, "rb") as f:
                    return f.read()
            if "Could not allocate" not in run.stderr and "No space left" not in run.stderr:
                break
            size *= 2
    raise ConfigError("%s could not make the ext4 image of the mounts: %s"
                      % (mkfs, (run.stderr or run.stdout).strip() or "exit status %d" % run.returncode))
