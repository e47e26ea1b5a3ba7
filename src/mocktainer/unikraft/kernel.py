"""Find and identify the kernel of a unikernel bundle.

A unikernel bundle's rootfs holds the kernel at `unikraft/bin/kernel` and,
optionally, an initial ramdisk at `unikraft/bin/initrd` (the layout kraftkit's
OCI images unpack to). `find_kernel()` opens both relative to the rootfs
without following symbolic links, so a bundle cannot make runu (and later
QEMU) read a file outside its rootfs, and reads the kernel's header to learn:

- `arch`: which QEMU system emulator runs it (`x86_64`, `aarch64`, `arm`), from
  the ELF `e_machine` (EM_386 and EM_X86_64 are both `x86_64`: a 32-bit
  multiboot kernel is booted by `qemu-system-x86_64`);
- `boot_protocol`: how QEMU's `-kernel` loader starts it, in the order QEMU
  itself checks: `linux` (a bzImage: "HdrS" at offset 0x202), `pvh` (an ELF
  note named "Xen" of type 18, XEN_ELFNOTE_PHYS32_ENTRY, in a PT_NOTE program
  header), `multiboot` (a multiboot v1 header, magic 0x1BADB002 with a valid
  checksum, 4-byte aligned in the first 8 KiB), otherwise `elf`;
- `linux`: whether it is a Linux kernel (a bzImage, or an ELF vmlinux, which
  carries ELF notes named "Linux"), which then needs a serial console and a
  power-off that ends the VMM on its command line (see `bundle`). A Linux
  vmlinux built with CONFIG_PVH is `pvh`, otherwise `elf` (Firecracker boots
  it; QEMU cannot).

`has_9pfs()` tells, for a Unikraft kernel, whether it can mount a virtio-9p share at all: Unikraft stops at
boot on a `vfs.fstab` entry whose file system it lacks, so runu gives such a kernel no share (`bundle`).
"""

from __future__ import annotations

import os
import stat
import struct

from mocktainer.error import ConfigError

from mocktainer.unikraft import INITRD, KERNEL  # noqa: F401  (re-exported)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator, NoReturn

    # (p_type, p_offset, p_vaddr, p_filesz, p_align) of one ELF program header
    ProgramHeader = tuple[int, int, int, int, int]
    # (arch, elf_class, boot_protocol, linux): see Kernel
    Identity = tuple[str, int | None, str, bool]

# ELF e_machine values we can run, and the QEMU architecture they map to.
EM_386 = 3
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
_MACHINES = {EM_386: "x86_64", EM_X86_64: "x86_64", EM_AARCH64: "aarch64", EM_ARM: "arm"}

PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18
MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH = 8192
_HEADER_READ = MULTIBOOT_SEARCH
_MAX_PHNUM = 4096
_MAX_NOTE_SEGMENT = 1 << 20
# Unikraft's 9p file system registers itself with vfscore under this name (lib9pfs: vs_name "9pfs"); the
# NUL-terminated name is in every image that links lib9pfs (as the tail of "lib9pfs" too) and in none without
# it, stripped or not.
NINEPFS_NAME = b"9pfs\0"
_SCAN_CHUNK = 1 << 20

_EXPECTED = ("expected an ELF executable for x86_64, aarch64 or arm "
             "(a Unikraft kernel image) or a Linux bzImage")


class Kernel:
    """A validated bundle kernel.

    `path` and `initrd` are absolute paths inside the bundle rootfs (strings,
    for messages); `elf_class` is 32 or 64 for an ELF kernel and None for a
    bzImage; `linux` is True for a Linux kernel.

    What the VMM opens is `boot_path` and `boot_initrd`: the same paths, unless
    `find_kernel(..., keep_open=True)` kept the checked files open (`fds`: the
    kernel's fd and the initrd's, or None) and `hand_over` then named them as
    the VMM will inherit them (`/proc/self/fd/N`). A path is opened again
    later, when the VMM starts; an fd is the very file that was checked, so a
    swap of the file (or of a directory above it) after create changes nothing,
    and no path of the bundle ever reaches QEMU's option parser.
    """

    __slots__ = ("path", "initrd", "arch", "elf_class", "boot_protocol", "linux", "fds", "boot_path",
                 "boot_initrd")
    _FIELDS = ("path", "initrd", "arch", "elf_class", "boot_protocol", "linux")

    def __init__(self, path: str, initrd: str | None, arch: str, elf_class: int | None, boot_protocol: str,
                 linux: bool = False) -> None:
        self.path = path
        self.initrd = initrd
        self.arch = arch
        self.elf_class = elf_class
        self.boot_protocol = boot_protocol
        self.linux = bool(linux)
        self.fds: tuple[int, int | None] | None = None
        self.boot_path = path
        self.boot_initrd = initrd

    def hand_over(self, first_fd: int) -> list[int]:
        """The open files (`fds`) the VMM must inherit as fds first_fd, first_fd+1, ...; from now on
        `boot_path`/`boot_initrd` name them by those numbers. The caller closes them once handed over."""
        files = [fd for fd in (self.fds or ()) if fd is not None]
        if self.fds:
            self.boot_path = "/proc/self/fd/%d" % first_fd
            if self.fds[1] is not None:
                self.boot_initrd = "/proc/self/fd/%d" % (first_fd + 1)
        return files

    def close(self) -> None:
        """Close the files `find_kernel(..., keep_open=True)` kept open."""
        fds, self.fds = self.fds, None
        for fd in fds or ():
            if fd is not None:
                os.close(fd)

    def __repr__(self) -> str:
        return ("Kernel(path=%r, initrd=%r, arch=%r, elf_class=%r, boot_protocol=%r, linux=%r)"
                % (self.path, self.initrd, self.arch, self.elf_class, self.boot_protocol, self.linux))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Kernel):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self._FIELDS)


def has_9pfs(kern: Kernel) -> bool:
    """Whether the kernel holds Unikraft's 9p file system (NINEPFS_NAME occurs in it): read through the
    checked file when it is kept open, else by its path."""
    if kern.fds:
        return contains(kern.fds[0], NINEPFS_NAME)
    fd = os.open(kern.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return contains(fd, NINEPFS_NAME)
    finally:
        os.close(fd)


def contains(fd: int, needle: bytes) -> bool:
    """Whether the file open on `fd` holds `needle`, read in chunks with pread (the offset stays put)."""
    keep = len(needle) - 1
    tail = b""
    offset = 0
    while True:
        chunk = os.pread(fd, _SCAN_CHUNK, offset)
        if not chunk:
            return False
        if needle in tail + chunk:
            return True
        tail = chunk[-keep:] if keep else b""
        offset += len(chunk)


def find_kernel(rootfs: str, keep_open: bool = False) -> Kernel | None:
    """Return the bundle's `Kernel`, or None when `rootfs` has no unikraft kernel.

    A missing `unikraft`, `unikraft/bin` or `unikraft/bin/kernel` means "not a
    unikernel bundle" (None). A symlink anywhere on those paths, a kernel that
    is not a regular file, or one that is neither an ELF for a supported
    architecture nor a bzImage raises ConfigError. With `keep_open` the checked
    kernel and initrd stay open in `Kernel.fds` (see `Kernel`; close them).
    """
    root = os.path.abspath(rootfs)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError("bundle rootfs %s does not exist" % root) from None
    except NotADirectoryError:
        raise ConfigError("bundle rootfs %s is not a directory" % root) from None
    except OSError as e:
        raise ConfigError("cannot open bundle rootfs %s: %s" % (root, e.strerror)) from None
    try:
        bin_fd = _open_dirs(root_fd, root, KERNEL.split("/")[:-1])
        if bin_fd is None:
            return None
        try:
            kpath = os.path.join(root, KERNEL)
            kfd = _open_file(bin_fd, kpath, "kernel")
            if kfd is None:
                return None
            ifd = None
            try:
                arch, elf_class, protocol, linux = identify(kfd, kpath)
                ipath = os.path.join(root, INITRD)
                ifd = _open_file(bin_fd, ipath, "initrd")
                kern = Kernel(kpath, ipath if ifd is not None else None, arch, elf_class, protocol, linux)
                if keep_open:
                    kern.fds, kfd, ifd = (kfd, ifd), None, None
            finally:
                for fd in (kfd, ifd):
                    if fd is not None:
                        os.close(fd)
        finally:
            os.close(bin_fd)
    finally:
        os.close(root_fd)
    return kern


def _open_dirs(dir_fd: int, root: str, components: list[str]) -> int | None:
    """Open root/components... as directories without following symlinks."""
    fd = os.dup(dir_fd)
    path = root
    for name in components:
        path = os.path.join(path, name)
        try:
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            return None
        except OSError as e:
            os.close(fd)
            _refuse(path, name, e)
        os.close(fd)
        fd = nfd
    return fd


def _open_file(dir_fd: int, path: str, what: str) -> int | None:
    name = os.path.basename(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        _refuse(path, name, e)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError("unikernel %s %s is not a regular file" % (what, path))
    return fd


def _refuse(path: str, name: str, err: OSError) -> NoReturn:
    import errno
    if err.errno == errno.ELOOP or (err.errno == errno.ENOTDIR and os.path.islink(path)):
        raise ConfigError(
            "%s is a symbolic link; runu does not follow symlinks under the bundle's "
            "unikraft/bin so the kernel cannot point outside the rootfs: replace it "
            "with the real %s" % (path, "file" if name in ("kernel", "initrd") else "directory")
        ) from None
    if err.errno == errno.ENOTDIR:
        raise ConfigError("%s is not a directory" % path) from None
    raise ConfigError("cannot open %s: %s" % (path, err.strerror)) from None


def identify(fd: int, path: str = "kernel") -> Identity:
    """Return (arch, elf_class, boot_protocol, linux) of the kernel open on `fd`."""
    head = os.pread(fd, _HEADER_READ, 0)
    if head[:4] == b"\x7fELF":
        return _identify_elf(fd, path, head)
    if len(head) >= 0x206 and head[0x202:0x206] == b"HdrS":
        return "x86_64", None, "linux", True
    if not head:
        raise ConfigError("unikernel kernel %s is empty: %s" % (path, _EXPECTED))
    raise ConfigError("unikernel kernel %s is not a kernel image: %s" % (path, _EXPECTED))


def _identify_elf(fd: int, path: str, head: bytes) -> Identity:
    if len(head) < 52:
        raise ConfigError("unikernel kernel %s is a truncated ELF file: %s" % (path, _EXPECTED))
    ei_class, ei_data = head[4], head[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise ConfigError("unikernel kernel %s has an invalid ELF header (class %d, data %d): %s"
                          % (path, ei_class, ei_data, _EXPECTED))
    end = "<" if ei_data == 1 else ">"
    elf_class = 32 if ei_class == 1 else 64
    (e_machine,) = struct.unpack_from(end + "H", head, 18)
    arch = _MACHINES.get(e_machine)
    if arch is None:
        raise ConfigError(
            "unikernel kernel %s is an ELF file for machine %d (e_machine), which runu cannot run: "
            "supported are x86_64 (62), i386 (3, multiboot), aarch64 (183) and arm (40)"
            % (path, e_machine))
    if elf_class == 64 and len(head) < 64:
        raise ConfigError("unikernel kernel %s is a truncated ELF file: %s" % (path, _EXPECTED))
    phoff, phentsize, phnum = program_table(head, end, elf_class)
    size = os.fstat(fd).st_size
    if phnum and phoff + phentsize * phnum > size:
        raise ConfigError("unikernel kernel %s is a corrupt ELF file: its program headers (offset %d, %d of %d "
                          "bytes) lie beyond its end (%d bytes)" % (path, phoff, phnum, phentsize, size))
    pvh, linux = _scan_notes(fd, end, elf_class, phoff, phentsize, phnum, size)
    if pvh:
        return arch, elf_class, "pvh", linux
    if _has_multiboot_header(head):
        return arch, elf_class, "multiboot", linux
    return arch, elf_class, "elf", linux


def _has_multiboot_header(head: bytes) -> bool:
    magic = struct.pack("<I", MULTIBOOT_MAGIC)
    limit = min(len(head), MULTIBOOT_SEARCH) - 12
    off = head.find(magic)
    while 0 <= off <= limit:
        if off % 4 == 0:
            m, flags, checksum = struct.unpack_from("<III", head, off)
            if (m + flags + checksum) & 0xFFFFFFFF == 0:
                return True
        off = head.find(magic, off + 1)
    return False


def program_table(head: bytes, end: str, elf_class: int) -> tuple[int, int, int]:
    """(e_phoff, e_phentsize, e_phnum) of the ELF header `head` (at least 52 bytes for ELF32, 64 for
    ELF64); `end` is the struct byte order ("<" or ">")."""
    if elf_class == 64:
        (phoff,) = struct.unpack_from(end + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
    else:
        (phoff,) = struct.unpack_from(end + "I", head, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
    return phoff, phentsize, phnum


def program_headers(fd: int, end: str, elf_class: int, phoff: int, phentsize: int,
                    phnum: int) -> list[ProgramHeader]:
    """(p_type, p_offset, p_vaddr, p_filesz, p_align) of each program header of the ELF file open on `fd`
    (the table that `program_table` locates); [] for an implausible table, fewer for a truncated one."""
    if elf_class == 64:
        fmt, size = end + "IIQQQQQQ", 56
    else:
        fmt, size = end + "IIIIIIII", 32
    if phnum == 0 or phnum > _MAX_PHNUM or phentsize < size:
        return []
    table = os.pread(fd, phentsize * phnum, phoff)
    out = []
    for i in range(min(phnum, len(table) // phentsize)):
        fields = struct.unpack_from(fmt, table, i * phentsize)
        if elf_class == 64:
            p_type, _flags, p_offset, p_vaddr, _pa, p_filesz, _memsz, p_align = fields
        else:
            p_type, p_offset, p_vaddr, _pa, p_filesz, _memsz, _flags, p_align = fields
        out.append((p_type, p_offset, p_vaddr, p_filesz, p_align))
    return out


def _scan_notes(fd: int, end: str, elf_class: int, phoff: int, phentsize: int, phnum: int,
                file_size: int) -> tuple[bool, bool]:
    """(has a PVH entry note, has a "Linux" note) from the PT_NOTE segments."""
    pvh = linux = False
    for p_type, p_offset, _va, p_filesz, p_align in program_headers(fd, end, elf_class, phoff, phentsize, phnum):
        if p_type != PT_NOTE or p_filesz == 0 or p_offset >= file_size:
            continue  # (a note segment beyond the file's end holds nothing to read)
        data = os.pread(fd, min(p_filesz, _MAX_NOTE_SEGMENT), p_offset)
        for name, ntype in _notes(data, end, 8 if p_align == 8 else 4):
            if ntype == XEN_ELFNOTE_PHYS32_ENTRY and name == b"Xen":
                pvh = True
            elif name == b"Linux":
                linux = True
    return pvh, linux


def _notes(data: bytes, end: str, align: int) -> Iterator[tuple[bytes, int]]:
    """(name, type) of each ELF note; `align` (4, or 8 for 8-aligned note segments) pads offsets."""
    mask = align - 1
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(end + "III", data, off)
        name = data[off + 12:off + 12 + namesz]
        desc_off = (off + 12 + namesz + mask) & ~mask
        off = (desc_off + descsz + mask) & ~mask
        yield name.rstrip(b"\0"), ntype
