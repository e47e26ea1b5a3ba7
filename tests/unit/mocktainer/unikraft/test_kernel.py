"""mocktainer.unikraft.kernel: finding and reading the kernel in a bundle (synthetic ELF/bzImage headers)."""

import os

import pytest

from harness.unikernels import EM_RISCV, make_bzimage, make_elf, make_rootfs
from mocktainer.error import ConfigError
from mocktainer.unikraft import kernel


class TestFindKernel:
    def test_no_unikraft_dir_is_not_a_unikernel(self, tmp_path):
        (tmp_path / "rootfs").mkdir()
        assert kernel.find_kernel(str(tmp_path / "rootfs")) is None

    def test_no_bin_or_no_kernel_is_not_a_unikernel(self, tmp_path):
        (tmp_path / "a" / "unikraft").mkdir(parents=True)
        assert kernel.find_kernel(str(tmp_path / "a")) is None
        root = make_rootfs(tmp_path, None, name="b")
        assert kernel.find_kernel(str(root)) is None

    def test_missing_rootfs_is_an_error(self, tmp_path):
        with pytest.raises(ConfigError, match="does not exist"):
            kernel.find_kernel(str(tmp_path / "nope"))

    @pytest.mark.parametrize("elf_class,machine,arch", [
        (64, 62, "x86_64"), (32, 3, "x86_64"), (32, 62, "x86_64"),
        (64, 183, "aarch64"), (32, 40, "arm"),
    ])
    def test_machines_and_classes(self, tmp_path, elf_class, machine, arch):
        root = make_rootfs(tmp_path, make_elf(elf_class, machine))
        k = kernel.find_kernel(str(root))
        assert (k.arch, k.elf_class, k.boot_protocol) == (arch, elf_class, "elf")
        assert k.path == os.path.join(str(root), "unikraft/bin/kernel")
        assert os.path.isabs(k.path) and k.initrd is None

    def test_big_endian_aarch64(self, tmp_path):
        root = make_rootfs(tmp_path, make_elf(64, 183, big_endian=True))
        assert kernel.find_kernel(str(root)).arch == "aarch64"

    @pytest.mark.parametrize("elf_class", [32, 64])
    @pytest.mark.parametrize("align", [4, 8])
    def test_pvh_note(self, tmp_path, elf_class, align):
        data = make_elf(elf_class, 62, pvh=True, note_align=align, other_note=True)
        root = make_rootfs(tmp_path, data)
        k = kernel.find_kernel(str(root))
        assert (k.arch, k.elf_class, k.boot_protocol) == ("x86_64", elf_class, "pvh")

    def test_multiboot_header(self, tmp_path):
        root = make_rootfs(tmp_path, make_elf(32, 3, multiboot_at=0x1000))
        k = kernel.find_kernel(str(root))
        assert (k.arch, k.elf_class, k.boot_protocol) == ("x86_64", 32, "multiboot")

    def test_pvh_wins_over_multiboot_like_qemu(self, tmp_path):
        root = make_rootfs(tmp_path, make_elf(64, 62, pvh=True, multiboot_at=0x1000))
        assert kernel.find_kernel(str(root)).boot_protocol == "pvh"

    @pytest.mark.parametrize("where,ok", [(0x1002, False), (8192, False), (8180, True)])
    def test_multiboot_alignment_and_window(self, tmp_path, where, ok):
        root = make_rootfs(tmp_path, make_elf(32, 3, multiboot_at=where, size=16384))
        assert kernel.find_kernel(str(root)).boot_protocol == ("multiboot" if ok else "elf")

    def test_multiboot_bad_checksum(self, tmp_path):
        root = make_rootfs(tmp_path, make_elf(32, 3, multiboot_at=0x1000,
                                              multiboot_checksum_ok=False))
        assert kernel.find_kernel(str(root)).boot_protocol == "elf"

    def test_bzimage(self, tmp_path):
        root = make_rootfs(tmp_path, make_bzimage())
        k = kernel.find_kernel(str(root))
        assert (k.arch, k.elf_class, k.boot_protocol, k.linux) == ("x86_64", None, "linux", True)

    @pytest.mark.parametrize("pvh,protocol", [(True, "pvh"), (False, "elf")])
    def test_linux_vmlinux(self, tmp_path, pvh, protocol):
        root = make_rootfs(tmp_path, make_elf(64, 62, pvh=pvh, linux_note=True, other_note=True))
        k = kernel.find_kernel(str(root))
        assert (k.elf_class, k.boot_protocol, k.linux) == (64, protocol, True)

    def test_unikernels_are_not_linux(self, tmp_path):
        for i, data in enumerate([make_elf(64, 62, pvh=True, other_note=True), make_elf(32, 3, multiboot_at=0x1000)]):
            assert kernel.find_kernel(str(make_rootfs(tmp_path, data, name="r%d" % i))).linux is False

    def test_initrd(self, tmp_path):
        root = make_rootfs(tmp_path, make_elf(64, 62, pvh=True), initrd=b"cpio")
        k = kernel.find_kernel(str(root))
        assert k.initrd == os.path.join(str(root), "unikraft/bin/initrd")

    @pytest.mark.parametrize("data,what", [
        (b"#!/bin/sh\necho not a kernel\n" * 50, "not a kernel image"),
        (b"", "is empty"),
        (b"\x7fELF\x02\x01", "truncated"),
        (b"\x7fELF\x07\x01" + bytes(100), "invalid ELF header"),
    ])
    def test_not_a_kernel(self, tmp_path, data, what):
        root = make_rootfs(tmp_path, data)
        with pytest.raises(ConfigError) as e:
            kernel.find_kernel(str(root))
        msg = str(e.value)
        assert what in msg
        assert os.path.join(str(root), "unikraft/bin/kernel") in msg
        assert "expected an ELF executable" in msg

    def test_unknown_machine(self, tmp_path):
        root = make_rootfs(tmp_path, make_elf(64, EM_RISCV))
        with pytest.raises(ConfigError, match=r"machine 243 \(e_machine\)"):
            kernel.find_kernel(str(root))

    def test_symlinked_kernel_is_refused_even_inside_rootfs(self, tmp_path):
        root = make_rootfs(tmp_path)
        (root / "real").write_bytes(make_elf(64, 62, pvh=True))
        os.symlink("../../real", root / "unikraft" / "bin" / "kernel")
        with pytest.raises(ConfigError, match="symbolic link"):
            kernel.find_kernel(str(root))

    def test_symlinked_kernel_out_of_rootfs(self, tmp_path):
        outside = tmp_path / "host-kernel"
        outside.write_bytes(make_elf(64, 62, pvh=True))
        root = make_rootfs(tmp_path)
        os.symlink(str(outside), root / "unikraft" / "bin" / "kernel")
        with pytest.raises(ConfigError, match="symbolic link"):
            kernel.find_kernel(str(root))

    @pytest.mark.parametrize("link", ["unikraft", "unikraft/bin"])
    def test_symlinked_directories(self, tmp_path, link):
        elsewhere = tmp_path / "elsewhere"
        (elsewhere / "unikraft" / "bin").mkdir(parents=True)
        (elsewhere / "unikraft" / "bin" / "kernel").write_bytes(make_elf(64, 62, pvh=True))
        root = tmp_path / "rootfs"
        root.mkdir()
        if link == "unikraft/bin":
            (root / "unikraft").mkdir()
        os.symlink(str(elsewhere / link), root / link)
        with pytest.raises(ConfigError, match="symbolic link") as e:
            kernel.find_kernel(str(root))
        assert str(root / link) in str(e.value)

    def test_symlinked_initrd(self, tmp_path):
        root = make_rootfs(tmp_path, make_elf(64, 62, pvh=True))
        os.symlink("/etc/passwd", root / "unikraft" / "bin" / "initrd")
        with pytest.raises(ConfigError, match="initrd is a symbolic link"):
            kernel.find_kernel(str(root))

    def test_kernel_not_a_regular_file(self, tmp_path):
        root = make_rootfs(tmp_path)
        (root / "unikraft" / "bin" / "kernel").mkdir()
        with pytest.raises(ConfigError, match="not a regular file"):
            kernel.find_kernel(str(root))
        (root / "unikraft" / "bin" / "kernel").rmdir()
        os.mkfifo(root / "unikraft" / "bin" / "kernel")
        with pytest.raises(ConfigError, match="not a regular file"):
            kernel.find_kernel(str(root))

    def test_unikraft_is_a_file(self, tmp_path):
        root = tmp_path / "rootfs"
        root.mkdir()
        (root / "unikraft").write_text("x")
        with pytest.raises(ConfigError, match="not a directory"):
            kernel.find_kernel(str(root))


class TestHas9pfs:
    """kernel.has_9pfs: Unikraft's 9p file system name (NUL-terminated) anywhere in the image."""

    def test_found_anywhere_and_across_chunks(self, tmp_path, monkeypatch):
        monkeypatch.setattr(kernel, "_SCAN_CHUNK", 7)  # the name straddles chunk boundaries
        for pad in range(0, 9):
            root = make_rootfs(tmp_path, make_elf(32, 3, multiboot_at=64) + bytes(pad) + b"lib9pfs\0x",
                               name="r%d" % pad)
            k = kernel.find_kernel(str(root), keep_open=pad % 2 == 0)  # through the kept fd, or the path
            try:
                assert kernel.has_9pfs(k), pad
            finally:
                k.close()

    def test_not_found(self, tmp_path):
        for i, tail in enumerate((b"", b"9pfs", b"9pfsx\0", b"9p fs\0", b"virtio-9p\0")):
            root = make_rootfs(tmp_path, make_elf(64, 62, pvh=True) + tail, name="r%d" % i)
            assert not kernel.has_9pfs(kernel.find_kernel(str(root))), tail
