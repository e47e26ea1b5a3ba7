"""mocktainer.unikraft.copies: what the merged initrd holds, in which order, and what it refuses."""

import os
import stat

import pytest

from mocktainer.error import ConfigError
from mocktainer.unikraft import copies, cpio
from mocktainer.unikraft.kernel import Kernel
from mocktainer.unikraft.mounts import Share

MIB = 1 << 20


def names(data):
    return [e.name for e in cpio.read(data)]


def test_a_later_mount_hides_what_an_earlier_one_put_there(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "x").mkdir(parents=True)
    (a / "x" / "old").write_text("old")
    (a / "keep").write_text("keep")
    b.mkdir()
    (b / "new").write_text("new")
    items = [Share("m0", str(a), "/data", True), Share("m1", str(b), "/data/x", True)]
    got = {e.name: e.data for e in cpio.read(copies.merge_initrd(None, items, MIB))}
    assert sorted(got) == ["data", "data/keep", "data/x", "data/x/new"]
    assert got["data/x/new"] == b"new"


def test_a_file_mount_keeps_the_rest_of_its_directory(tmp_path):
    (tmp_path / "hosts").write_text("h")
    base = cpio.write([cpio.Entry("./etc", stat.S_IFDIR | 0o755, ino=1),
                       cpio.Entry("./etc/hosts", stat.S_IFREG | 0o644, b"image", ino=2),
                       cpio.Entry("./etc/passwd", stat.S_IFREG | 0o644, b"root", ino=3)])
    items = [Share("m0", None, "/etc", True, [("hosts", str(tmp_path / "hosts"), True)])]
    got = cpio.read(copies.merge_initrd(base, items, MIB))
    # "./etc/hosts" of the image is the same path as the mount's "etc/hosts": hidden
    assert [(e.name, e.data) for e in got] == [("./etc", b""), ("./etc/passwd", b"root"), ("etc/hosts", b"h")]
    assert [e.ino for e in got] == [1, 3, 4]  # ours after the image's highest inode: no accidental hard link


def test_a_mount_below_a_non_directory_of_the_image_is_refused(tmp_path):
    (tmp_path / "f").write_text("f")
    base = cpio.write([cpio.Entry("etc", stat.S_IFLNK | 0o777, b"/somewhere", ino=1)])
    items = [Share("m0", None, "/etc", True, [("f", str(tmp_path / "f"), True)])]
    with pytest.raises(ConfigError, match="has /etc, which is not a directory, where a mount needs one"):
        copies.merge_initrd(base, items, MIB)


def test_the_limit_counts_the_bundles_initrd(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 1000)
    items = [Share("m0", None, "/etc", True, [("f", str(tmp_path / "f"), True)])]
    base = cpio.write([cpio.Entry("big", stat.S_IFREG | 0o644, b"y" * (MIB - 600), ino=1)])
    with pytest.raises(ConfigError, match=r"larger than 1 MiB \(at .*/f\)"):
        copies.merge_initrd(base, items, MIB)
    assert len(copies.merge_initrd(base, items, 2 * MIB)) > MIB


def test_read_initrd_opens_no_link_and_is_bounded(tmp_path):
    real = tmp_path / "initrd.real"
    real.write_bytes(b"z" * 100)
    link = tmp_path / "initrd"
    link.symlink_to(real)
    k = Kernel("/k", str(link), "x86_64", 64, "pvh")
    with pytest.raises(ConfigError, match="cannot read the bundle's initrd"):
        copies.read_initrd(k, MIB, "x")
    os.unlink(link)
    os.rename(real, link)
    assert copies.read_initrd(k, MIB, "x") == b"z" * 100
    with pytest.raises(ConfigError, match="is larger than 10 bytes, the most a small guest can take"):
        copies.read_initrd(k, 10, "a small guest")
    assert copies.read_initrd(Kernel("/k", None, "x86_64", 64, "pvh"), MIB, "x") is None


def test_too_deep_a_tree_is_refused(tmp_path):
    d = tmp_path / "src"
    p = d
    for _ in range(copies.MAX_DEPTH + 1):
        p = p / "d"
    p.mkdir(parents=True)
    with pytest.raises(ConfigError, match="deeper than %d directories" % copies.MAX_DEPTH):
        copies.merge_initrd(None, [Share("m0", str(d), "/data", True)], MIB)
