"""mocktainer.unikraft.cpio: the newc format, written and read back, and archives made by another writer."""

import gzip
import os
import stat
import sys

import pytest

from mocktainer.unikraft import cpio

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def entries():
    return [
        cpio.Entry("etc", stat.S_IFDIR | 0o755, nlink=2, ino=1, mtime=1700000000),
        cpio.Entry("etc/hosts", stat.S_IFREG | 0o644, b"127.0.0.1 localhost\n", ino=2, uid=1000, gid=100),
        cpio.Entry("etc/odd name \u00e9", stat.S_IFREG | 0o600, b"x" * 5, ino=3),  # not a multiple of 4
        cpio.Entry("etc/link", stat.S_IFLNK | 0o777, b"hosts", ino=4),
        cpio.Entry("dev/console", stat.S_IFCHR | 0o600, ino=5, rdev=(5, 1)),
        cpio.Entry("empty", stat.S_IFREG | 0o644, b"", ino=6),
    ]


def test_round_trip_keeps_names_modes_and_data():
    data = cpio.write(entries())
    assert len(data) % 4 == 0
    assert data.startswith(b"070701")
    assert cpio.read(data) == entries()


def test_the_header_is_what_newc_says():
    data = cpio.write([cpio.Entry("a", stat.S_IFREG | 0o644, b"abc", ino=7, uid=1, gid=2, mtime=3)])
    assert data[:110] == (b"070701" + b"00000007" + b"000081A4" + b"00000001" + b"00000002" + b"00000001"
                          + b"00000003" + b"00000003" + b"00000000" * 4 + b"00000002" + b"00000000")
    assert data[110:112] == b"a\0"  # header + name: 112, a multiple of 4, so no padding
    assert data[112:116] == b"abc\0"  # the data, padded to 4
    assert b"TRAILER!!!\0" in data[116:]


def test_hard_links_are_read_as_they_are():
    """Two entries sharing an inode (the data in the last one), as GNU cpio writes hard links: kept
    entry by entry, so writing them again keeps the link."""
    links = [cpio.Entry("a", stat.S_IFREG | 0o644, b"", ino=9, nlink=2),
             cpio.Entry("b", stat.S_IFREG | 0o644, b"shared", ino=9, nlink=2)]
    got = cpio.read(cpio.write(links))
    assert [(e.name, e.ino, e.nlink, e.data) for e in got] == [("a", 9, 2, b""), ("b", 9, 2, b"shared")]


def test_reads_an_archive_from_another_writer():
    """The Linux test guest's initramfs, written by tests/guest/linux.py's own newc writer, gzip'ed."""
    sys.path.insert(0, TESTS)
    try:
        from guest import linux
    finally:
        sys.path.remove(TESTS)
    c = linux.Cpio()
    c.dir("bin")
    c.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    c.symlink("bin/sh", "tool")
    c.chardev("dev/null", 1, 3, 0o666)
    got = {e.name: e for e in cpio.read(c.finish())}
    assert got["bin"].kind == stat.S_IFDIR
    assert got["bin/tool"].data == b"#!/bin/sh\necho hi\n" and stat.S_IMODE(got["bin/tool"].mode) == 0o755
    assert got["bin/sh"].kind == stat.S_IFLNK and got["bin/sh"].data == b"tool"
    assert got["dev/null"].rdev == (1, 3)


@pytest.mark.parametrize("damage, words", [
    (lambda d: d[:50], "truncated"),
    (lambda d: b"070707" + d[6:], "not a newc cpio archive"),
    (lambda d: d[:6] + b"zzzzzzzz" + d[14:], "corrupt cpio header"),
    (lambda d: d[:len(d) - 120], "truncated"),  # the trailer cut off
    (lambda d: gzip.compress(d), "not a newc cpio archive"),
])
def test_damaged_archives_are_refused(damage, words):
    with pytest.raises(ValueError, match=words):
        cpio.read(damage(cpio.write(entries())))


def test_writer_refuses_what_newc_cannot_hold():
    with pytest.raises(ValueError, match="empty or holds a NUL"):
        cpio.write([cpio.Entry("", stat.S_IFREG)])
    with pytest.raises(ValueError, match="32 bits"):
        cpio.write([cpio.Entry("big", stat.S_IFREG, uid=1 << 32)])


def test_writer_size_tracks_the_bytes():
    w = cpio.Writer()
    for e in entries():
        w.add(e)
    before = w.size
    data = w.finish()
    assert before < len(data) == w.size
