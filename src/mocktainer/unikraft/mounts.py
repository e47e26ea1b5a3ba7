"""Files reach the guest: the OCI spec's bind mounts (and, on request, the bundle's rootfs) as shares.

Runs in two places. At create, in runu (`plan`): the spec's `mounts` become `Share`s, checked, with the
guest's instructions (Unikraft `vfs.fstab` entries or Linux `runu.mount=` parameters) and the VMM's
arguments. Then, in the container's supervisor before the VMM starts (`enter`): a private mount namespace
in which each share is a directory under `<state dir>/shares/`, made of bind mounts of exactly the objects
that were checked, read-only where the spec says so. The VMM (and virtiofsd) inherit that namespace; it
ends with them, so nothing is left on the host to undo.

Which mounts (the rules are listed in docs/bundles.md):
- skipped: the file systems a VM has no use for (proc, sysfs, devpts, mqueue, cgroup, tmpfs, ... by type)
  and anything at or under /dev, /proc or /sys (the runtime's /dev, /dev/shm, /dev/termination-log);
- shared: bind mounts (`type` "bind", or a `bind`/`rbind` option), of a directory or a regular file;
- refused: other types, a destination that is not absolute or holds `..`, a source that is missing, not
  absolute, or neither a directory nor a regular file (a device, a FIFO, a socket).

A directory mount is one share. File mounts are grouped by the directory they land in: one share per
directory holds a tmpfs with one bind-mounted file per mount (so /etc/hosts, /etc/hostname and
/etc/resolv.conf of a pod are one share), each file read-only or not on its own.

How a backend gives the shares (`Given`, from the backend's `give_mounts`): QEMU shares them live as
above; Firecracker, which has no shared file system, gets read-only copies made at create (copies.py) and
writable mounts are refused (`firecracker_shares`), so there the supervisor has nothing to mount.
"""

from __future__ import annotations

import os
import stat

from mocktainer.error import ConfigError

ROOTFS_ANNOTATION = "org.unikraft.runu.mount-rootfs"
SHARES_DIR = "shares"
ROOTFS_TAG = "rootfs"
LINUX_PARAM = "runu.mount="
LINUX_ROOT_PARAM = "runu.root="
FSTAB_PARAM = "vfs.fstab="
SKIPPED_TYPES = frozenset((
    "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "tmpfs", "shm", "devtmpfs", "securityfs",
    "debugfs", "tracefs", "hugetlbfs", "configfs", "fusectl", "pstore", "bpf", "binfmt_misc", "ramfs"))
SKIPPED_UNDER = ("/dev", "/proc", "/sys")
# Firecracker has no shared file system: read-only mounts are copied at create (copies.py), writable ones
# refused but these (what podman and the CRI plugin add to every container, writable), copied read-only.
SNAPSHOT_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
# A Linux guest's copy is one read-only ext4 disk: Firecracker's only drive, so the guest's vda.
DISK_PARAM = "runu.disk="
DISK_DEVICE = "vda"

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_NOSYMFOLLOW = 0x100
CLONE_NEWNS = 0x20000


class Share:
    """One directory the guest gets: `tag` (the mount tag), `source` (a host directory, or None for a group
    of files), `dest` (where the guest mounts it: the directory mount's destination, or the files' common
    directory), `readonly`, `files` [(name, host source, readonly)] for a group of file mounts."""

    __slots__ = ("tag", "source", "dest", "readonly", "files")

    def __init__(self, tag: str, source: str | None, dest: str, readonly: bool,
                 files: list[tuple[str, str, bool]] | None = None) -> None:
        self.tag, self.source, self.dest, self.readonly = tag, source, dest, bool(readonly)
        self.files = list(files or [])

    def as_dict(self) -> dict[str, object]:
        return {"tag": self.tag, "source": self.source, "dest": self.dest, "readonly": self.readonly,
                "files": [list(f) for f in self.files]}

    @classmethod
    def from_dict(cls, d: dict) -> Share:
        return cls(d["tag"], d.get("source"), d["dest"], bool(d.get("readonly")),
                   [(str(n), str(s), bool(r)) for n, s, r in d.get("files") or []])

    def __repr__(self) -> str:
        return "Share(%r)" % (self.as_dict(),)


def wanted(mount: object) -> bool:
    """False for a mount the guest has no use for (see module doc); ConfigError for one runu cannot share."""
    if not isinstance(mount, dict):
        raise ConfigError("mounts in the OCI config must be a list of objects")
    dest = mount.get("destination")
    if not isinstance(dest, str) or not dest:
        raise ConfigError("a mount in the OCI config has no destination")
    kind = mount.get("type") or ""
    options = mount.get("options") or []
    if not isinstance(kind, str) or not isinstance(options, list):
        raise ConfigError("mount %s: type must be a string and options a list" % dest)
    if kind in SKIPPED_TYPES:
        return False
    norm = os.path.normpath("/" + dest.lstrip("/"))
    if any(norm == d or norm.startswith(d + "/") for d in SKIPPED_UNDER):
        return False
    if kind == "bind" or "bind" in options or "rbind" in options:
        return True
    raise ConfigError("mount %s of type %r: runu gives a guest bind mounts of host files and directories "
                      "only" % (dest, kind))


def check_destination(dest: str) -> str:
    """The destination as an absolute path; ConfigError for a relative one or one with `..`."""
    if not dest.startswith("/"):
        raise ConfigError("mount destination %r is not an absolute path" % dest)
    if ".." in dest.split("/"):
        raise ConfigError("mount destination %r holds '..'; runu refuses it" % dest)
    if "\0" in dest or "\n" in dest:
        raise ConfigError("mount destination %r holds a control character" % dest)
    return os.path.normpath(dest) if dest != "/" else "/"


def check_source(source: object, dest: str) -> tuple[str, bool]:
    """(the source's real path, is a directory); ConfigError unless it is a directory or a regular file."""
    if not isinstance(source, str) or not source.startswith("/"):
        raise ConfigError("mount %s: source %r is not an absolute host path" % (dest, source))
    real = os.path.realpath(source)
    try:
        st = os.stat(real)
    except OSError as e:
        raise ConfigError("mount %s: source %s: %s" % (dest, source, e.strerror)) from None
    if stat.S_ISDIR(st.st_mode):
        return real, True
    if stat.S_ISREG(st.st_mode):
        return real, False
    raise ConfigError("mount %s: source %s is neither a directory nor a regular file (a device, FIFO or "
                      "socket cannot be shared with a guest)" % (dest, source))


def readonly(mount: dict) -> bool:
    """The last of `ro`/`rw` in the options wins, as in mount(8); the default is read-write."""
    ro = False
    for opt in mount.get("options") or []:
        if opt == "ro":
            ro = True
        elif opt == "rw":
            ro = False
    return ro


def shares(spec: dict, rootfs: str, annotations: dict) -> list[Share]:
    """The shares for `spec` (see module doc), the rootfs first when the annotation asks for it."""
    out: list[Share] = []
    want = annotations.get(ROOTFS_ANNOTATION)
    if want not in (None, "", "false", "true"):
        raise ConfigError("annotation %s=%r: use true or false" % (ROOTFS_ANNOTATION, want))
    if want == "true":
        root = spec.get("root")
        ro = bool(root.get("readonly")) if isinstance(root, dict) else False
        out.append(Share(ROOTFS_TAG, os.path.realpath(rootfs), "/", ro))
    mounts = spec.get("mounts") or []
    if not isinstance(mounts, list):
        raise ConfigError("mounts in the OCI config must be a list")
    groups: dict[str, Share] = {}
    for m in mounts:
        if not wanted(m):
            continue
        dest = check_destination(m["destination"])
        if dest == "/":
            raise ConfigError("a mount on / : use the annotation %s to share the rootfs" % ROOTFS_ANNOTATION)
        source, is_dir = check_source(m.get("source"), dest)
        ro = readonly(m)
        if is_dir:
            out.append(Share("m%d" % len(out), source, dest, ro))
            continue
        parent, name = os.path.split(dest)
        group = groups.get(parent)
        if group is None:
            group = groups[parent] = Share("m%d" % len(out), None, parent, True)
            out.append(group)
        group.files = [f for f in group.files if f[0] != name] + [(name, source, ro)]  # the last one wins
        group.readonly = all(f[2] for f in group.files)
    return out


# -- what the guest is told --------------------------------------------------------------------------------

def _escape(text: str) -> str:
    """`text` for a `runu.mount=` field: `%`, `:`, blanks and quotes as %XX."""
    return "".join("%%%02X" % ord(c) if c in "%:\"' \t\n" else c for c in text)


def linux_params(items: list[Share]) -> list[str]:
    """Kernel parameters telling a Linux guest's init what to mount: `runu.root=<tag>:<ro|rw>` for the
    rootfs, and per mounted path `runu.mount=<tag>:<destination>:<ro|rw>[:<file name>]` (a file name when
    the share is a directory of files, each to be bind-mounted on its destination); fields %XX-escaped.
    (With a copy on a disk, `Given.linux_params` puts `runu.disk=<device>` first: the tags are then the
    disk's top directories.)"""
    out = []
    for s in items:
        if s.tag == ROOTFS_TAG and s.source is not None and s.dest == "/":
            out.append("%s%s:%s" % (LINUX_ROOT_PARAM, s.tag, "ro" if s.readonly else "rw"))
        elif s.source is not None:
            out.append("%s%s:%s:%s" % (LINUX_PARAM, s.tag, _escape(s.dest), "ro" if s.readonly else "rw"))
        else:
            for name, _src, ro in s.files:
                out.append("%s%s:%s:%s:%s" % (LINUX_PARAM, s.tag, _escape(os.path.join(s.dest, name)),
                                              "ro" if ro else "rw", _escape(name)))
    return out


def fstab_entries(items: list[Share]) -> list[str]:
    """Unikraft `vfs.fstab` entries (`<tag>:<mount point>:9pfs:::mkmp`): a group of files is mounted on its
    directory (Unikraft has no bind mount of a file), so it hides what the image has there."""
    for s in items:
        if ":" in s.dest:
            raise ConfigError("mount destination %r holds ':', which a Unikraft vfs.fstab entry cannot carry"
                              % s.dest)
    return ["%s:%s:9pfs:::mkmp" % (s.tag, s.dest) for s in items]


def _split_fstab(params: list[str]) -> tuple[list[str], list[str]]:
    """(the parameters other than `vfs.fstab`, the user's fstab entries from `vfs.fstab=x` or
    `vfs.fstab=[ x y ]` words)."""
    user: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(params):
        p = params[i]
        if not p.startswith(FSTAB_PARAM):
            rest.append(p)
            i += 1
            continue
        value = p[len(FSTAB_PARAM):]
        if value.startswith("["):
            words = value[1:].split()
            while not (words and words[-1].endswith("]")) and i + 1 < len(params):
                i += 1
                words += params[i].split()
            if words and words[-1].endswith("]"):
                last = words.pop()[:-1]
                if last:
                    words.append(last)
            user += words
        else:
            user.append(value)
        i += 1
    return rest, user


def merge_fstab(params: list[str], entries: list[str], initrd_entry: str | None = None) -> list[str]:
    """`params` (Unikraft library parameters, one word each) with one `vfs.fstab` list: the user's entries
    (from `vfs.fstab=x` or `vfs.fstab=[ x y ]` words), else `initrd_entry` when it is given and no share
    is mounted on /, then `entries`. Without `entries` the `params` come back as they are."""
    if not entries:
        return list(params)
    rest, user = _split_fstab(params)
    base = user
    if not base and initrd_entry and not any(e.split(":")[1] == "/" for e in entries):
        base = [initrd_entry]
    return rest + [FSTAB_PARAM + "["] + base + entries + ["]"]


def initrd_root_fstab(params: list[str], initrd_entry: str) -> list[str]:
    """`params` with `initrd_entry` (the initrd on /) first in the `vfs.fstab` list, before the user's
    entries: the mounts were copied into the initrd (Firecracker, see copies.py). Unchanged when the user's
    entries mount the initrd's device themselves; ConfigError when they mount something else on /."""
    rest, user = _split_fstab(params)
    device = initrd_entry.split(":")[0]
    if any(e.split(":")[0] == device for e in user):
        return list(params)
    for e in user:
        if e.split(":")[1:2] == ["/"]:
            raise ConfigError("vfs.fstab entry %r mounts /, but under Firecracker the mounts are copied into "
                              "the initrd, which must be the root (%s): leave / to it, or mount %s yourself"
                              % (e, initrd_entry, device))
    return rest + [FSTAB_PARAM + "[", initrd_entry] + user + ["]"]


# -- in the supervisor: the private mount namespace ------------------------------------------------------

def share_dir(state_dir: str, share: Share) -> str:
    return os.path.join(state_dir, SHARES_DIR, share.tag)


def _bind(fd: int, target: str, ro: bool) -> None:
    from mocktainer import system

    system.mount("/proc/self/fd/%d" % fd, target, None, MS_BIND)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOSYMFOLLOW | (MS_RDONLY if ro else 0)
    system.mount("none", target, None, flags)


def _open_checked(source: str, directory: bool) -> int:
    """The source as it was checked at create (its real path, so no component is a link): opened without
    following a symlink anywhere on the way (openat2 RESOLVE_NO_SYMLINKS; O_NOFOLLOW for the last component
    where openat2 is missing), and still of the same kind (a swap for a link, a FIFO or a device fails)."""
    from mocktainer import system

    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = system.open_no_symlinks(source, flags)
        except OSError as e:
            if e.errno != 38:  # ENOSYS: a kernel before 5.6
                raise
            fd = os.open(source, flags)
    except OSError as e:
        raise ConfigError("mount source %s: %s (was it replaced since create checked it?)"
                          % (source, e.strerror)) from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        os.close(fd)
        raise ConfigError("mount source %s changed since it was checked: it is no longer a %s"
                          % (source, "directory" if directory else "regular file"))
    return fd


def enter(state_dir: str, items: list[Share]) -> None:
    """Move this process into a private mount namespace where each share is `share_dir(state_dir, share)`
    (see module doc). The directories themselves are created on the host (empty; they go with the state
    directory)."""
    from mocktainer import system

    system.load_libc()
    base = os.path.join(state_dir, SHARES_DIR)
    os.makedirs(base, mode=0o700, exist_ok=True)
    for s in items:
        os.makedirs(share_dir(state_dir, s), mode=0o700, exist_ok=True)
    system.unshare(CLONE_NEWNS)
    system.mount("none", "/", None, MS_REC | MS_PRIVATE)
    for s in items:
        target = share_dir(state_dir, s)
        if s.source is not None:
            fd = _open_checked(s.source, True)
            try:
                _bind(fd, target, s.readonly)
            finally:
                os.close(fd)
            continue
        system.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755")
        for name, source, ro in s.files:
            fd = _open_checked(source, False)
            try:
                place = os.path.join(target, name)
                os.close(os.open(place, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
                _bind(fd, place, ro)
            finally:
                os.close(fd)
        if s.readonly:
            system.mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
                         | MS_NOEXEC)


# -- the VMM's side -----------------------------------------------------------------------------------------

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"


def _qemu_value(text: str) -> str:
    return text.replace(",", ",,")


def socket_path(state_dir: str, share: Share) -> str:
    """The vhost-user socket of `share` in the state directory, or in the short path `state_dir` names it by
    (an AF_UNIX path has at most 107 bytes: runu passes `/proc/self/fd/N`, see vmm.VM.control_dir)."""
    return os.path.join(state_dir, "vfs-%s.sock" % share.tag)


def qemu_args(items: list[Share], state_dir: str, machine: str, linux: bool, memory_mib: int,
              control_dir: str | None = None) -> list[str]:
    """QEMU's devices for the shares: virtio-9p (Unikraft's 9pfs; `readonly=on` for a read-only share;
    `multidevs=remap` because a group of files is a tmpfs with files of other file systems bound onto it, and
    a directory may hold mounts: QEMU then keeps the guest's inode numbers apart instead of warning on the
    container's stderr about file ID collisions) for a unikernel, virtio-fs (a vhost-user device served by
    virtiofsd, `virtiofsd_args`) for a Linux guest, whose guest memory must then be a shared memfd; QEMU
    reaches the sockets through `control_dir` (the state directory's short path in the VMM) when given."""
    if not items:
        return []
    mmio = machine == "microvm"
    out: list[str] = []
    if linux:
        out += ["-object", "memory-backend-memfd,id=runu-mem,size=%dM,share=on" % memory_mib,
                "-machine", "memory-backend=runu-mem"]
    for s in items:
        if linux:
            where = socket_path(control_dir or state_dir, s)
            out += ["-chardev", "socket,id=vfs-%s,path=%s" % (s.tag, _qemu_value(where)),
                    "-device", "%s,chardev=vfs-%s,tag=%s" % ("vhost-user-fs-device" if mmio else
                                                             "vhost-user-fs-pci", s.tag, s.tag)]
        else:
            out += ["-fsdev", "local,id=fs-%s,path=%s,security_model=none,multidevs=remap%s"
                    % (s.tag, _qemu_value(share_dir(state_dir, s)), ",readonly=on" if s.readonly else ""),
                    "-device", "%s,fsdev=fs-%s,mount_tag=%s" % ("virtio-9p-device" if mmio else "virtio-9p-pci",
                                                                s.tag, s.tag)]
    return out


def virtiofsd_args(state_dir: str, share: Share, fd: int) -> list[str]:
    """virtiofsd for one share, on the listening socket `fd`: in its own sandbox (mount, pid and net
    namespaces, pivot_root into the share), no xattrs, only its errors on the container's stderr."""
    return [VIRTIOFSD, "--fd=%d" % fd, "-o", "source=" + share_dir(state_dir, share),
            "-o", "sandbox=namespace", "-o", "cache=auto", "-o", "log_level=err", "-o", "no_xattr"]


def listen(state_dir: str, share: Share) -> int:
    """A listening socket for `share`'s vhost-user connection (QEMU connects to its path)."""
    import _socket

    dirfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        path = socket_path("/proc/self/fd/%d" % dirfd, share)
        if os.path.lexists(path):
            os.unlink(path)
        s.bind(path)
        s.listen(1)
    except BaseException:
        s.close()
        raise
    finally:
        os.close(dirfd)
    return s.detach()


def no_9pfs_warning(items: list[Share]) -> str:
    """What runu says when it leaves `items` out for a Unikraft kernel without 9pfs (see bundle)."""
    dests = []
    for s in items:
        dests += [os.path.join(s.dest, f[0]) for f in s.files] if s.source is None else [s.dest]
    return ("the kernel has no 9pfs file system (Unikraft stops at boot on a vfs.fstab entry it cannot "
            "mount), so these mounts are not shared with the guest: %s; build the image with "
            "CONFIG_LIB9PFS and CONFIG_LIBVIRTIO_9P to get them" % ", ".join(dests))


def firecracker_shares(items: list[Share]) -> list[Share]:
    """The shares as Firecracker gets them: copied read-only at create (copies.py). A read-only mount as it
    is; the files every client adds (SNAPSHOT_FILES) read-only whatever the spec says (a snapshot: the
    guest's writes, if any, stay in the guest); ConfigError for any other writable mount and for the
    rootfs (see docs/bundles.md for why)."""
    out = []
    for s in items:
        if s.tag == ROOTFS_TAG and s.source is not None and s.dest == "/":
            raise ConfigError("annotation %s=true: Firecracker cannot share the bundle's rootfs with the guest; "
                              "use QEMU (annotation org.unikraft.runu.vmm=qemu), or put the files in the "
                              "initrd" % ROOTFS_ANNOTATION)
        if s.source is not None:
            if not s.readonly:
                raise ConfigError(_writable(s.dest))
            out.append(s)
            continue
        for name, _source, ro in s.files:
            dest = os.path.join(s.dest, name)
            if not ro and dest not in SNAPSHOT_FILES:
                raise ConfigError(_writable(dest))
        out.append(Share(s.tag, None, s.dest, True, [(n, src, True) for n, src, _ro in s.files]))
    return out


def _writable(dest: str) -> str:
    return ("mount %s is writable, but Firecracker cannot share host files with a guest: runu gives it "
            "read-only copies made at create, and a writable copy's changes would never reach the host; mount "
            "it read-only (option ro) or use QEMU (annotation org.unikraft.runu.vmm=qemu)" % dest)


class Given:
    """How a backend gives the shares to the guest: `items` (the shares the VM gets), `live` (True: shared
    while the VM runs, by the supervisor (`enter`, QEMU); False: copied at create (copies.py, Firecracker))."""

    __slots__ = ("items", "live")

    def __init__(self, items: list[Share], live: bool) -> None:
        self.items = list(items)
        self.live = live

    @property
    def copied(self) -> bool:
        """True when there is a copy: a Unikraft guest's initrd holds it, a Linux guest's disk."""
        return not self.live and bool(self.items)

    def linux_params(self) -> list[str]:
        """A Linux guest's parameters (`linux_params`), `runu.disk=vda` first for a copy on a disk."""
        return ([DISK_PARAM + DISK_DEVICE] if self.copied else []) + linux_params(self.items)

    def fstab(self) -> list[str]:
        """A Unikraft guest's `vfs.fstab` entries for live shares (a copy is in the initrd instead)."""
        return fstab_entries(self.items) if self.live else []
