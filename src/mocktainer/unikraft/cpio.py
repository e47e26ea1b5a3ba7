"""The cpio "newc" format (magic 070701), which Unikraft's initrd extraction and Linux's initramfs read.

runu reads a bundle's initrd and writes a new one with the mounts merged in (copies.merge_initrd), for
Firecracker, which cannot share host files with a guest.

An entry is a 110-byte ASCII header (the magic, then 13 fields of 8 hex digits: ino, mode, uid, gid,
nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize with its NUL, check), the
name with its NUL, padding to 4 bytes, the data (a file's content, a symlink's target), padding to 4
bytes. The archive ends with an entry named TRAILER!!!. "070702" (newc with a checksum of the data) is
read too; only 070701 is written.

Hard links: an archive may give several entries the same (devmajor, devminor, ino) with nlink > 1, the
data in the last one. `read` gives the entries as they are (each its own ino and nlink); runu's own
entries are never hard links (each its own ino, nlink 1, its data), so a written archive keeps the links
of the entries it was given and adds none.
"""

from __future__ import annotations

import stat

MAGIC = b"070701"
MAGIC_CRC = b"070702"
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110
_FIELD_MAX = 0xFFFFFFFF


class Entry:
    """One member: `name` (as stored, no leading "/"), `mode` (type and permission bits), `data` (a
    regular file's content or a symlink's target), and the header's other fields."""

    __slots__ = ("name", "mode", "data", "uid", "gid", "nlink", "mtime", "ino", "dev", "rdev")

    def __init__(self, name: str, mode: int, data: bytes = b"", *, uid: int = 0, gid: int = 0, nlink: int = 1,
                 mtime: int = 0, ino: int = 0, dev: tuple[int, int] = (0, 0),
                 rdev: tuple[int, int] = (0, 0)) -> None:
        self.name = name
        self.mode = mode
        self.data = data
        self.uid, self.gid, self.nlink, self.mtime, self.ino = uid, gid, nlink, mtime, ino
        self.dev, self.rdev = dev, rdev

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    def __repr__(self) -> str:
        return "Entry(%r, %o, %d bytes, ino=%d, nlink=%d)" % (self.name, self.mode, len(self.data), self.ino,
                                                              self.nlink)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)


def _pad(n: int) -> int:
    return -n % 4


def read(data: bytes) -> list[Entry]:
    """The entries of the newc archive `data`, up to its trailer (not included). ValueError, with the
    offset, for anything else (another cpio format, a truncated or corrupt archive, no trailer)."""
    out: list[Entry] = []
    off = 0
    view = memoryview(data)
    while True:
        if off + HEADER_SIZE > len(data):
            raise ValueError("truncated cpio archive: no header at offset %d (no %s entry)" % (off, TRAILER))
        magic = bytes(view[off:off + 6])
        if magic not in (MAGIC, MAGIC_CRC):
            raise ValueError("not a newc cpio archive: magic %r at offset %d (expected %r)"
                             % (magic, off, MAGIC.decode()))
        try:
            fields = [int(bytes(view[off + 6 + 8 * i:off + 14 + 8 * i]), 16) for i in range(13)]
        except ValueError:
            raise ValueError("corrupt cpio header at offset %d" % off) from None
        ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, _check = fields
        start = off + HEADER_SIZE
        if namesize < 1 or start + namesize > len(data):
            raise ValueError("corrupt cpio entry at offset %d: name size %d" % (off, namesize))
        raw = bytes(view[start:start + namesize])
        if raw[-1:] != b"\0" or b"\0" in raw[:-1]:
            raise ValueError("corrupt cpio entry at offset %d: its name is not one NUL-terminated string" % off)
        name = raw[:-1].decode("utf-8", "surrogateescape")
        dstart = start + namesize + _pad(HEADER_SIZE + namesize)
        if dstart + size > len(data):
            raise ValueError("truncated cpio archive: %s needs %d bytes at offset %d" % (name, size, dstart))
        if name == TRAILER:
            return out
        out.append(Entry(name, mode, bytes(view[dstart:dstart + size]), uid=uid, gid=gid, nlink=nlink,
                         mtime=mtime, ino=ino, dev=(dmaj, dmin), rdev=(rmaj, rmin)))
        off = dstart + size + _pad(size)


def header(e: Entry, name: bytes, size: int) -> bytes:
    """The newc header of `e` whose name (NUL included) is `name` and data `size` bytes."""
    fields = (e.ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, size, e.dev[0], e.dev[1], e.rdev[0], e.rdev[1],
              len(name), 0)
    for v in fields:
        if not 0 <= v <= _FIELD_MAX:
            raise ValueError("cpio entry %s: a field (%d) does not fit in newc's 32 bits" % (e.name, v))
    return MAGIC + b"".join(b"%08X" % v for v in fields)


class Writer:
    """A newc archive built in memory: `add` each entry, then `finish` (adds the trailer) gives the bytes.
    `size` is the length so far, so a caller can stop before a limit."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def add(self, e: Entry) -> None:
        name = e.name.encode("utf-8", "surrogateescape") + b"\0"
        if b"\0" in name[:-1] or len(name) == 1:
            raise ValueError("cpio entry name %r is empty or holds a NUL byte" % e.name)
        parts = (header(e, name, len(e.data)), name, b"\0" * _pad(HEADER_SIZE + len(name)), e.data,
                 b"\0" * _pad(len(e.data)))
        self._parts.extend(parts)
        self.size += sum(len(p) for p in parts)

    def finish(self) -> bytes:
        self.add(Entry(TRAILER, 0))
        return b"".join(self._parts)


def write(entries: list[Entry]) -> bytes:
    """The newc archive of `entries`, in that order, with its trailer."""
    w = Writer()
    for e in entries:
        w.add(e)
    return w.finish()
