"""mocktainer.unikraft: kernel discovery, QEMU command lines, create-time plan.

Unit tests use synthetic kernel headers; the integration tests at the end boot
the tiny test kernel (tests/guest) in real QEMU from the argv `plan()` makes.
"""

import os
import select
import shutil
import struct
import subprocess
import sys
import time

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from mocktainer import error as mocktainer_error  # noqa: E402
from mocktainer.error import ConfigError  # noqa: E402
from mocktainer.unikraft import bundle, host, kernel, qemu  # noqa: E402
from mocktainer.unikraft.kernel import Kernel  # noqa: E402

EM_RISCV = 243


# -- synthetic kernels ---------------------------------------------------------

def make_elf(elf_class=64, machine=62, *, big_endian=False, pvh=False, note_align=4,
             multiboot_at=None, multiboot_checksum_ok=True, other_note=False, linux_note=False,
             size=8192):
    """A minimal ELF executable header, optionally with a PVH note and a multiboot header."""
    end = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([1 if elf_class == 32 else 2, 2 if big_endian else 1, 1]) + bytes(9)
    def note(name, ntype, desc):
        pad = note_align - 1
        n = struct.pack(end + "III", len(name), len(desc), ntype) + name
        n += bytes(((len(n) + pad) & ~pad) - len(n)) + desc
        return n + bytes(((len(n) + pad) & ~pad) - len(n))

    notes = b""
    if other_note:
        notes += note(b"GNU\0", 1, b"\1\2\3\4\5")
    if linux_note:  # what a vmlinux carries (LINUX_ELFNOTE_BUILD_SALT is type 0x100)
        notes += note(b"Linux\0", 0x100, b"6.1.0\0")
    if pvh:
        notes += note(b"Xen\0", 18, struct.pack(end + "I", 0x100000))
    phnum = 2
    if elf_class == 64:
        ehsize, phentsize = 64, 56
    else:
        ehsize, phentsize = 52, 32
    phoff = ehsize
    note_off = phoff + phnum * phentsize
    if elf_class == 64:
        hdr = ident + struct.pack(end + "HHIQQQIHHHHHH", 2, machine, 1, 0x100000, phoff, 0, 0,
                                  ehsize, phentsize, phnum, 64, 0, 0)
        load = struct.pack(end + "IIQQQQQQ", 1, 5, 0, 0x100000, 0x100000, size, size, 0x1000)
        note = struct.pack(end + "IIQQQQQQ", 4 if notes else 6, 4, note_off, 0, 0, len(notes),
                           len(notes), note_align)
    else:
        hdr = ident + struct.pack(end + "HHIIIIIHHHHHH", 2, machine, 1, 0x100000, phoff, 0, 0,
                                  ehsize, phentsize, phnum, 40, 0, 0)
        load = struct.pack(end + "IIIIIIII", 1, 0, 0x100000, 0x100000, size, size, 5, 0x1000)
        note = struct.pack(end + "IIIIIIII", 4 if notes else 6, note_off, 0, 0, len(notes),
                           len(notes), 4, note_align)
    data = bytearray(hdr + load + note + notes)
    data += bytes(max(0, size - len(data)))
    if multiboot_at is not None:
        magic, flags = 0x1BADB002, 0x00010003
        checksum = (-(magic + flags)) & 0xFFFFFFFF
        if not multiboot_checksum_ok:
            checksum ^= 1
        mb = struct.pack("<III", magic, flags, checksum)
        if len(data) < multiboot_at + 12:
            data += bytes(multiboot_at + 12 - len(data))
        data[multiboot_at:multiboot_at + 12] = mb
    return bytes(data)


def make_bzimage():
    data = bytearray(4096)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, 0x020F)
    return bytes(data)


def make_rootfs(tmp_path, kernel_bytes=None, initrd=None, name="rootfs"):
    root = tmp_path / name
    (root / "unikraft" / "bin").mkdir(parents=True)
    if kernel_bytes is not None:
        (root / "unikraft" / "bin" / "kernel").write_bytes(kernel_bytes)
    if initrd is not None:
        (root / "unikraft" / "bin" / "initrd").write_bytes(initrd)
    return root


def fake_kernel(arch="x86_64", protocol="pvh", elf_class=64, initrd=None, linux=None):
    linux = protocol == "linux" if linux is None else linux
    return Kernel("/bundle/rootfs/unikraft/bin/kernel", initrd, arch, elf_class, protocol, linux)


def opt(args, name):
    """Values of every `name` option in an argv."""
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]


# -- kernel.py -------------------------------------------------------------------

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


# -- qemu.py ---------------------------------------------------------------------

def make_exe(path, body="#!/bin/sh\nexit 0\n", mode=0o755):
    path.write_text(body)
    path.chmod(mode)
    return path


class TestBinaries:
    def test_path_first(self, tmp_path):
        make_exe(tmp_path / "qemu-system-x86_64")
        assert host.find_binary("qemu-system-x86_64", str(tmp_path)) == \
            str(tmp_path / "qemu-system-x86_64")

    def test_system_dirs_after_a_tiny_path(self, tmp_path):
        found = host.find_binary("sh", str(tmp_path))
        assert os.path.dirname(found) in host.SYSTEM_DIRS
        assert host.find_binary("sh", None) == found
        assert host.find_binary("sh", "") == found

    def test_not_executable_or_directory_skipped(self, tmp_path):
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        make_exe(a / "tool", mode=0o644)
        (b / "tool").mkdir()
        with pytest.raises(ConfigError, match="tool not found in PATH"):
            host.find_binary("tool", "%s:%s" % (a, b))

    def test_empty_path_entry_is_not_cwd(self, tmp_path, monkeypatch):
        make_exe(tmp_path / "tool")
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError):
            host.find_binary("tool", ":/nonexistent:")

    def test_qemu_binary_names_the_debian_package(self, tmp_path, monkeypatch):
        monkeypatch.setattr(host, "SYSTEM_DIRS", ())
        with pytest.raises(ConfigError, match=r"apt-get install qemu-system-arm") as e:
            qemu.qemu_binary("aarch64", str(tmp_path))
        assert "qemu-system-aarch64" in str(e.value)
        with pytest.raises(ConfigError, match=r"apt-get install qemu-system-x86\)"):
            qemu.qemu_binary("x86_64", str(tmp_path))
        with pytest.raises(ConfigError, match="no QEMU system emulator"):
            qemu.qemu_binary("riscv64", str(tmp_path))
        make_exe(tmp_path / "qemu-system-arm")
        assert qemu.qemu_binary("arm", str(tmp_path)) == str(tmp_path / "qemu-system-arm")


class TestKvm:
    def test_not_a_kvm_device(self, tmp_path):
        assert host.kvm_usable("/dev/null") is False
        assert host.kvm_usable(str(tmp_path / "kvm")) is False

    def test_real_device_matches_api_version(self):
        if not os.path.exists("/dev/kvm"):
            pytest.skip("no /dev/kvm")
        assert host.kvm_usable() in (True, False)


class TestChooseAccel:
    K = fake_kernel()

    def choose(self, annotations=None, environ=None, kernel=None, kvm=True, hw=True):
        return qemu.choose_accel(annotations or {}, environ or {}, kernel or self.K,
                                 kvm_check=lambda: kvm, hwvirt_check=lambda: hw)

    def test_auto(self):
        assert self.choose(kvm=True) == "kvm"
        assert self.choose(kvm=False) == "tcg"
        assert self.choose({qemu.ACCEL_ANNOTATION: "auto"}, kvm=True) == "kvm"

    def test_annotation_overrides_environment(self):
        assert self.choose({qemu.ACCEL_ANNOTATION: "tcg"}, {"RUNU_ACCEL": "kvm"}) == "tcg"
        assert self.choose({qemu.ACCEL_ANNOTATION: "kvm"}, {"RUNU_ACCEL": "tcg"}) == "kvm"
        assert self.choose({qemu.ACCEL_ANNOTATION: ""}, {"RUNU_ACCEL": "tcg"}) == "tcg"

    def test_environment(self):
        assert self.choose(environ={"RUNU_ACCEL": "tcg"}, kvm=True) == "tcg"
        assert self.choose(environ={"RUNU_ACCEL": " KVM "}, kvm=True) == "kvm"

    @pytest.mark.parametrize("annotations,environ,source", [
        ({"org.unikraft.runu.accel": "hvf"}, {}, "annotation org.unikraft.runu.accel='hvf'"),
        ({}, {"RUNU_ACCEL": "xen"}, "environment variable RUNU_ACCEL='xen'"),
        ({"org.unikraft.runu.accel": "bogus"}, {"RUNU_ACCEL": "tcg"}, "bogus"),
    ])
    def test_invalid(self, annotations, environ, source):
        with pytest.raises(ConfigError, match="use kvm, tcg or auto") as e:
            self.choose(annotations, environ)
        assert source in str(e.value)

    def test_forced_kvm_unusable(self):
        with pytest.raises(ConfigError, match="asks for kvm but /dev/kvm is missing"):
            self.choose({qemu.ACCEL_ANNOTATION: "kvm"}, kvm=False)
        with pytest.raises(ConfigError, match="environment variable RUNU_ACCEL asks for kvm"):
            self.choose(environ={"RUNU_ACCEL": "kvm"}, kvm=False)

    def test_foreign_architecture(self):
        arm = fake_kernel("aarch64" if host.host_arch() != "aarch64" else "x86_64")
        assert self.choose(kernel=arm, kvm=True) == "tcg"
        with pytest.raises(ConfigError, match="cannot use KVM on this"):
            self.choose({qemu.ACCEL_ANNOTATION: "kvm"}, kernel=arm, kvm=True)

    def test_linux_guest_needs_hardware_virtualisation(self):
        linux = fake_kernel(host.host_arch(), "linux", None)
        assert self.choose(kernel=linux, kvm=True, hw=False) == "tcg"
        assert self.choose(kernel=linux, kvm=True, hw=True) == "kvm"
        assert self.choose(kvm=True, hw=False) == "kvm"  # unikernels run on it
        with pytest.raises(ConfigError, match="Linux guests crash"):
            self.choose({qemu.ACCEL_ANNOTATION: "kvm"}, kernel=linux, kvm=True, hw=False)


class TestQemuArgs:
    def args(self, k=None, **kw):
        kw.setdefault("memory_mib", 64)
        kw.setdefault("cmdline", "a -- b")
        kw.setdefault("accel", "tcg")
        return qemu.qemu_args("/usr/bin/qemu-system-x86_64", k or fake_kernel(), **kw)

    def test_console_and_no_monitor(self):
        a = self.args()
        assert a[0] == "/usr/bin/qemu-system-x86_64"
        for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
            assert flag in a
        assert opt(a, "-display") == ["none"]
        assert opt(a, "-monitor") == ["none"]
        assert opt(a, "-chardev") == ["stdio,id=console0"]
        assert opt(a, "-serial") == ["chardev:console0"]
        for bad in ("-nographic", "-qmp", "-daemonize", "-S", "-vnc"):
            assert bad not in a
        assert not any("mon:" in x for x in a)

    def test_x86_pvh(self):
        a = self.args()
        assert opt(a, "-M") == ["microvm"]
        assert opt(a, "-device") == ["isa-debug-exit,iobase=0xf4,iosize=4", "isa-debug-exit,iobase=0x501,iosize=2"]
        assert opt(a, "-kernel") == ["/bundle/rootfs/unikraft/bin/kernel"]
        assert opt(a, "-append") == ["a -- b"]
        assert opt(a, "-m") == ["64M"]
        assert opt(a, "-accel") == ["tcg,tb-size=32"]  # a bounded translation cache (OVERHEAD_MIB)
        assert opt(a, "-cpu") == ["max"]
        assert opt(a, "-initrd") == []

    def test_multiboot_and_bzimage_on_pc(self):
        assert opt(self.args(fake_kernel(protocol="multiboot", elf_class=32)), "-M") == ["pc"]
        assert opt(self.args(fake_kernel(protocol="linux", elf_class=None)), "-M") == ["pc"]

    def test_kvm_cpu(self):
        a = self.args(accel="kvm")
        assert opt(a, "-accel") == ["kvm"]
        assert opt(a, "-cpu") == ["host,-arch-capabilities"]

    def test_plain_x86_elf_cannot_boot(self):
        with pytest.raises(ConfigError, match="neither a PVH ELF note nor a multiboot header"):
            self.args(fake_kernel(protocol="elf"))

    def test_arm(self):
        a = self.args(fake_kernel("aarch64", "elf"))
        assert opt(a, "-M") == ["virt"] and opt(a, "-cpu") == ["cortex-a57"]
        assert opt(a, "-device") == []
        a = self.args(fake_kernel("arm", "elf", 32), accel="kvm")
        assert opt(a, "-M") == ["virt"] and opt(a, "-cpu") == ["host"]

    def test_initrd_empty_cmdline_memory_smp(self):
        k = fake_kernel(initrd="/bundle/rootfs/unikraft/bin/initrd")
        a = self.args(k, cmdline="", memory_mib=129, smp=2)
        assert opt(a, "-initrd") == ["/bundle/rootfs/unikraft/bin/initrd"]
        assert "-append" not in a
        assert opt(a, "-m") == ["129M"] and opt(a, "-smp") == ["2"]

    def test_bad_values(self):
        with pytest.raises(ConfigError):
            self.args(accel="hax")
        with pytest.raises(ConfigError):
            self.args(memory_mib=0)

    def test_machine_override(self):
        assert opt(self.args(machine="pc"), "-M") == ["pc"]
        assert opt(self.args(fake_kernel(protocol="multiboot"), machine="microvm"), "-M") == \
            ["microvm"]
        with pytest.raises(ConfigError, match="org.unikraft.runu.machine='virt'"):
            self.args(machine="virt")

    def test_nic_hook(self):
        a = self.args(nic_fds=[(3, "02:00:00:00:00:01")])
        assert opt(a, "-netdev") == ["tap,id=net0,fd=3"]
        assert "virtio-net-device,netdev=net0,mac=02:00:00:00:00:01" in opt(a, "-device")
        pc = self.args(fake_kernel(protocol="multiboot"))
        extra = qemu.nic_args(pc, [(5, "02:00:00:00:00:02"), (6, "02:00:00:00:00:03")])
        assert extra == ["-netdev", "tap,id=net0,fd=5",
                         "-device", "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:02",
                         "-netdev", "tap,id=net1,fd=6",
                         "-device", "virtio-net-pci,netdev=net1,mac=02:00:00:00:00:03"]


# -- bundle.py: command line -----------------------------------------------------

def uk_argnparse(line):
    """Python model of Unikraft's uk_argnparse: blanks split, quotes group, a backslash escapes outside
    single quotes (inside double quotes only before `"` or a backslash); quotes alone make no word."""
    argv, cur, in_word, quote, escape = [], [], False, None, False
    for ch in line:
        if escape:
            escape = False
            if quote == '"' and ch not in '"\\':
                cur.append("\\")
            cur.append(ch)
            continue
        if ch in " \r\n\t\v" and not quote:
            if in_word:
                argv.append("".join(cur))
                cur, in_word = [], False
            continue
        if ch in "'\"" and (not quote or quote == ch):
            quote = None if quote else ch
            continue
        in_word = True
        if ch == "\\" and quote != "'":
            escape = True
            continue
        cur.append(ch)
    if escape:
        cur.append("\\")
    if in_word:
        argv.append("".join(cur))
    return argv


def unikraft_argv(line, program=True):
    """(argv[0], library params, application args) as Unikraft 0.16's ukboot splits `line`: the first word is
    argv[0] (`program` False: QEMU's multiboot loader writes one first), the params run up to the first `--`
    outside a list when at least one word stands before it."""
    argv = uk_argnparse(line if program else "kernel " + line)
    rest, in_list = argv[1:], False
    for i, w in enumerate(rest):
        if in_list:
            in_list = not w.endswith("]")
        elif w == "--":
            if i > 0:
                return argv[0], rest[:i], rest[i + 1:]
            break
        elif "=" in w and w.split("=", 1)[1].startswith("["):
            value = w.split("=", 1)[1]
            in_list = not (len(value) > 1 and value.endswith("]"))
    return argv[0], [], rest


def unikraft_view(line, program=False):
    """(env, library params, application args) as a Unikraft kernel sees `line`."""
    _, params, app = unikraft_argv(line, program)
    env = [p[len("env.vars="):] for p in params if p.startswith("env.vars=")]
    return env, [p for p in params if not p.startswith("env.vars=") and p not in ("[", "]")], app


AWKWARD = [
    "two words", "it's", 'say "hi"', "both ' and \"", "tab\there", "new\nline",
    "--flag=a b", "[", "]", "x]", "'", '"', "''", "-", "ünïcødé", "a=b", "$HOME", "\\", "--",
]


class TestCmdline:
    @pytest.mark.parametrize("entry", ["/unikraft/bin/kernel", "unikraft/bin/kernel",
                                       "./unikraft/bin/kernel", "//unikraft//bin/kernel"])
    def test_entrypoint_dropped(self, entry):
        assert bundle.guest_cmdline([entry, "hello", "world"]) == "hello world"

    def test_other_first_arg_kept(self):
        assert bundle.guest_cmdline(["/bin/app", "x"]) == "/bin/app x"
        assert bundle.guest_cmdline(["/unikraft/bin/kernel2"]) == "/unikraft/bin/kernel2"
        assert bundle.guest_cmdline([]) == ""
        assert bundle.guest_cmdline(["/unikraft/bin/kernel"]) == ""

    def test_kraftkit_empty_command(self):
        assert bundle.guest_cmdline(["/unikraft/bin/kernel", "--"]) == ""

    def test_params_and_env(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "vfs.fstab=x", "--", "/app", "-v"],
                                    ["PATH=/bin", "GREETING=hi there"])
        assert line == "env.vars=PATH=/bin 'env.vars=GREETING=hi there' vfs.fstab=x -- /app -v"
        assert unikraft_view(line) == (["PATH=/bin", "GREETING=hi there"], ["vfs.fstab=x"],
                                       ["/app", "-v"])

    def test_env_only(self):
        assert bundle.guest_cmdline(["/unikraft/bin/kernel"], ["A=1"]) == "env.vars=A=1 --"

    def test_app_double_dash_without_params_keeps_separator(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "-x", "--", "y"])
        assert line == "env.vars=[ ] -- -x -- y"
        assert unikraft_argv(line, False)[1:] == (["env.vars=[", "]"], ["-x", "--", "y"])

    @pytest.mark.parametrize("args,env", [([], []), (["a", "b"], []), ([], ["A=1"]), (["a"], ["A=1"]),
                                          (["-x", "--", "y"], []), (["--"], ["A=1"])])
    @pytest.mark.parametrize("program", [None, "/unikraft/bin/kernel"])
    def test_every_form_reads_exactly(self, args, env, program):
        """Rules 1 and 2: argv[0], then the parameters only when they are there, the args exactly."""
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--"] + args, env, program)
        argv0, params, app = unikraft_argv(line, program is not None)
        assert argv0 == (program or "kernel") and app == args
        assert [p for p in params if p.startswith("env.vars=") and p != "env.vars=["] == \
            ["env.vars=" + e for e in env]

    @pytest.mark.parametrize("args", [[], ["a", "b c"]])
    @pytest.mark.parametrize("env", [[], ["A=1", "B=x -- y"]])
    def test_firecracker_rewrite_keeps_the_nic_before_the_separator(self, args, env):
        """Rule 3: Firecracker's split at ` -- ` and insertion of virtio_mmio.device, modelled."""
        from mocktainer.unikraft import cmdline

        line = bundle.guest_line(["/unikraft/bin/kernel", "--"] + args, env, "/unikraft/bin/kernel")
        line.params.append("netdev.ip=10.0.0.2/24")
        text = cmdline.render(line, firecracker_nic=True)
        head, sep, tail = text.partition(" -- ")
        dev = "virtio_mmio.device=4K@0xd0000000:5"
        booted = (head + " " + dev + " -- " + tail) if sep and tail.strip() else (head + " " + dev)
        argv0, params, app = unikraft_argv(booted)
        assert argv0 == "/unikraft/bin/kernel" and app == args
        assert dev in params and "netdev.ip=10.0.0.2/24" in params
        assert [p[9:] for p in params if p.startswith("env.vars=")] == env

    def test_program_name_and_backslash(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "a\\b"], [], "/unikraft/bin/kernel")
        assert line == "/unikraft/bin/kernel 'a\\b'"
        assert unikraft_argv(line) == ("/unikraft/bin/kernel", [], ["a\\b"])

    def test_initrd_fstab_unless_given(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "x"], [], None, initrd=True)
        assert line == "vfs.fstab=[ initrd0:/:extract::ramfs=1: ] -- x"
        own = bundle.guest_cmdline(["/unikraft/bin/kernel", "vfs.fstab=[ a ]", "--"], [], None, initrd=True)
        assert "initrd0" not in own
        assert bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "x"], [], None) == "x"

    def test_env_at_risk(self):
        params = ["env.vars=V%d=%d" % (i, i) for i in range(7)] + ["env.vars=[", "A=1", "B=2]", "x.y=1"]
        assert bundle.env_at_risk(params) == ["B"]
        assert bundle.env_at_risk(["env.vars=[A=1]"] * 8) == []

    @pytest.mark.parametrize("word", AWKWARD)
    def test_awkward_word_round_trips(self, word):
        # (a parameter whose value starts with `[` opens a list: the user's to write)
        params = [] if word.startswith("[") else ["p.q=" + word]
        args = ["/unikraft/bin/kernel"] + params + ["--", "app", word, "end"]
        env = ["V=" + word, "W=" + word + "]"]
        line = bundle.guest_cmdline(args, env)
        assert unikraft_view(line) == (env, params, ["app", word, "end"])

    def test_all_awkward_at_once(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--"] + AWKWARD, ["X=" + "".join(AWKWARD)])
        assert unikraft_view(line) == (["X=" + "".join(AWKWARD)], [], AWKWARD)

    def test_quote(self):
        assert bundle.quote("plain") == "plain"
        assert bundle.quote("a b") == "'a b'"
        assert bundle.quote("it's") == "'it'\"'\"'s'"

    @pytest.mark.parametrize("args,env,match", [
        (["/unikraft/bin/kernel", ""], [], "empty string"),
        (["/unikraft/bin/kernel", "a\0b"], [], "NUL"),
        (["x"], ["NOEQUALS"], "NAME=value"),
        (["x"], ["=v"], "NAME=value"),
        (["x"], ["[=v"], "NAME=value"),
        (["x"], ["A=\0"], "NUL"),
    ])
    def test_inexpressible(self, args, env, match):
        with pytest.raises(ConfigError, match=match):
            bundle.guest_cmdline(args, env)


class TestResources:
    @pytest.mark.parametrize("limit,mib", [
        (None, 64), (-1, 64), (0, 64), (64 << 20, 64), ((64 << 20) + 1, 64), ((65 << 20) - 1, 64),
        (8 << 20, 8), (1 << 30, 1024),
    ])
    def test_memory(self, limit, mib):
        res = {} if limit is None else {"memory": {"limit": limit}}
        assert bundle.memory_mib(res) == mib

    @pytest.mark.parametrize("limit,overhead,mib", [
        (None, 64, 64), (-1, 16, 64), (128 << 20, 64, 64), ((128 << 20) + 12345, 64, 64),
        (72 << 20, 64, 8), (24 << 20, 16, 8), (1 << 30, 16, 1008),
    ])
    def test_memory_leaves_headroom_for_the_vmm(self, limit, overhead, mib):
        res = {} if limit is None else {"memory": {"limit": limit}}
        assert bundle.memory_mib(res, overhead, "qemu") == mib

    @pytest.mark.parametrize("limit", [1, 1 << 20, (7 << 20), (8 << 20) - 1])
    def test_memory_too_small(self, limit):
        with pytest.raises(ConfigError, match="at least 8 MiB"):
            bundle.memory_mib({"memory": {"limit": limit}})

    def test_memory_too_small_names_limit_and_minimum(self):
        with pytest.raises(ConfigError) as e:
            bundle.memory_mib({"memory": {"limit": 70 << 20}}, 64, "qemu")
        assert str(e.value) == (
            "memory limit of 73400320 bytes is too small for a qemu VM: runu keeps 64 MiB of it for qemu "
            "itself and the guest needs at least 8 MiB, so the limit must be at least 72 MiB (75497472 bytes); "
            "raise linux.resources.memory.limit")

    @pytest.mark.parametrize("limit", [True, "64M", 6.4e7, [1]])
    def test_memory_not_a_number(self, limit):
        with pytest.raises(ConfigError, match="whole number of bytes"):
            bundle.memory_mib({"memory": {"limit": limit}})

    def test_memory_section_wrong_type(self):
        with pytest.raises(ConfigError, match="linux.resources.memory in the OCI config must be an object"):
            bundle.memory_mib({"memory": 5})

    def test_vcpus(self):
        host = os.cpu_count()
        assert bundle.vcpu_count({}) == 1
        assert bundle.vcpu_count({"cpu": {"quota": 50000, "period": 100000}}) == 1
        assert bundle.vcpu_count({"cpu": {"quota": 150000, "period": 100000}}) == min(2, host)
        assert bundle.vcpu_count({"cpu": {"quota": -1, "period": 100000}}) == 1
        assert bundle.vcpu_count({"cpu": {"cpus": "0"}}) == 1
        assert bundle.vcpu_count({"cpu": {"cpus": "0-63"}}) == host
        with pytest.raises(ConfigError, match="not a CPU list"):
            bundle.vcpu_count({"cpu": {"cpus": "zero"}})


# -- bundle.py: plan -------------------------------------------------------------

def sandbox_spec(args, env=None):
    return {"ociVersion": "1.0.2",
            "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
            "process": {"args": args, "env": env or ["PATH=/usr/bin:/bin"]}}


class TestSandbox:
    def rootfs(self, tmp_path):
        root = tmp_path / "rootfs"
        (root / "usr" / "bin").mkdir(parents=True)
        make_exe(root / "pause")
        make_exe(root / "usr" / "bin" / "pause2")
        return root

    def test_absolute(self, tmp_path):
        root = self.rootfs(tmp_path)
        p = bundle.plan(sandbox_spec(["/pause", "-v"], ["PATH=/x", "A=b"]), str(root), {})
        assert p.kind == "sandbox"
        assert p.args == [str(root / "pause"), "-v"]
        assert p.env == ["PATH=/x", "A=b"]
        assert p.kernel is None

    def test_relative_path_and_path_lookup(self, tmp_path):
        root = self.rootfs(tmp_path)
        assert bundle.plan(sandbox_spec(["./pause"]), str(root), {}).args == [str(root / "pause")]
        assert bundle.plan(sandbox_spec(["pause2"]), str(root), {}).args == \
            [str(root / "usr/bin/pause2")]

    def test_symlinks_stay_inside(self, tmp_path):
        root = self.rootfs(tmp_path)
        os.symlink("/usr/bin/pause2", root / "abs-link")
        os.symlink("../../../../../../usr/bin/pause2", root / "rel-link")
        for link in ("/abs-link", "/rel-link"):
            assert bundle.plan(sandbox_spec([link]), str(root), {}).args == \
                [str(root / "usr/bin/pause2")]
        os.symlink("/bin/sh", root / "escape")  # the host's /bin/sh exists, the rootfs' not
        with pytest.raises(ConfigError, match="does not exist in the bundle rootfs"):
            bundle.plan(sandbox_spec(["/escape"]), str(root), {})
        with pytest.raises(ConfigError, match="does not exist"):
            bundle.plan(sandbox_spec(["/../../../../bin/sh"]), str(root), {})

    def test_symlink_loop(self, tmp_path):
        root = self.rootfs(tmp_path)
        os.symlink("loop", root / "loop")
        with pytest.raises(ConfigError, match="too many levels"):
            bundle.plan(sandbox_spec(["/loop"]), str(root), {})

    def test_errors(self, tmp_path):
        root = self.rootfs(tmp_path)
        with pytest.raises(ConfigError, match="empty process.args"):
            bundle.plan(sandbox_spec([]), str(root), {})
        with pytest.raises(ConfigError, match="empty process.args"):
            bundle.plan({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}},
                        str(root), {})
        with pytest.raises(ConfigError, match="'/missing' does not exist"):
            bundle.plan(sandbox_spec(["/missing"]), str(root), {})
        with pytest.raises(ConfigError, match="not found in the bundle rootfs"):
            bundle.plan(sandbox_spec(["nothere"]), str(root), {})
        (root / "data").write_text("x")
        with pytest.raises(ConfigError, match="not an executable file"):
            bundle.plan(sandbox_spec(["/data"]), str(root), {})
        with pytest.raises(ConfigError, match="not an executable file"):
            bundle.plan(sandbox_spec(["/usr"]), str(root), {})

    def test_sandbox_wins_over_kernel(self, tmp_path):
        root = self.rootfs(tmp_path)
        (root / "unikraft" / "bin").mkdir(parents=True)
        (root / "unikraft" / "bin" / "kernel").write_bytes(b"garbage")
        assert bundle.plan(sandbox_spec(["/pause"]), str(root), {}).kind == "sandbox"


class TestPlanUnikernel:
    def setup(self, tmp_path, data=None):
        root = make_rootfs(tmp_path, data if data is not None else make_elf(64, 62, pvh=True))
        bindir = tmp_path / "bin"
        bindir.mkdir()
        make_exe(bindir / "qemu-system-x86_64")
        return root, {"PATH": str(bindir), "RUNU_ACCEL": "tcg", "RUNU_CONFIG": ""}

    def test_plan(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"process": {"args": ["/unikraft/bin/kernel", "-v"], "env": ["A=1"]},
                "linux": {"resources": {"memory": {"limit": 164 << 20}}}}
        p = bundle.plan(spec, str(root), environ)
        assert p.vmm == "qemu" and p.files == {}
        assert p.kind == "unikernel"
        assert p.args[0] == str(tmp_path / "bin" / "qemu-system-x86_64")
        assert p.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        assert p.cmdline == "/unikraft/bin/kernel env.vars=A=1 -- -v"  # PVH: argv[0] is runu's to write
        assert opt(p.args, "-append") == [p.cmdline]
        assert opt(p.args, "-m") == ["92M"] and p.memory_mib == 92  # 164 - 64 (QEMU) - 8 (its supervisor)
        assert opt(p.args, "-accel") == ["tcg,tb-size=32"] and p.accel == "tcg"
        assert opt(p.args, "-M") == ["microvm"] and p.machine == "microvm"
        assert opt(p.args, "-kernel") == [str(root / "unikraft/bin/kernel")]
        assert p.kernel.boot_protocol == "pvh"

    def test_guest_record_initrd_and_env_warning(self, tmp_path, monkeypatch):
        """What the guest network needs at start (the line's parts, machine, hostname, resolv.conf mount), the
        initrd's vfs.fstab, and the warning for env vars past the eighth."""
        _, environ = self.setup(tmp_path)
        root = make_rootfs(tmp_path, make_elf(64, 62, pvh=True), initrd=b"x", name="rootfs2")
        warnings = []
        monkeypatch.setattr(mocktainer_error, "warning_sink", warnings.append)
        env = ["V%d=%d" % (i, i) for i in range(9)]
        for d in ("old", "pod"):
            (tmp_path / d).mkdir()
            (tmp_path / d / "resolv.conf").write_text("nameserver 192.0.2.1\n")
        (tmp_path / "pod" / "hosts").write_text("127.0.0.1 localhost\n")
        pod, state = str(tmp_path / "pod"), str(tmp_path / "state" / "c1")
        # the mounts as the clients write them (bind mounts), so they are also shares for the guest (issue 14)
        spec = {"process": {"args": ["unikraft/bin/kernel", "--", "app"], "env": env}, "hostname": "web-1",
                "mounts": [{"destination": "/etc/resolv.conf", "source": str(tmp_path / "old" / "resolv.conf"),
                            "options": ["rbind", "ro"]},
                           {"destination": "/etc//resolv.conf/", "source": pod + "/resolv.conf", "type": "bind"},
                           {"destination": "/etc/hosts", "source": pod + "/hosts", "type": "bind"}]}
        p = bundle.plan(spec, str(root), environ, state)
        # the initrd's root entry first (no user entry, no share on /), then the shares'
        assert p.guest == {"line": {"program": "unikraft/bin/kernel", "params": ["env.vars=" + e for e in env]
                                    + ["vfs.fstab=[", "initrd0:/:extract::ramfs=1:", "m0:/etc:9pfs:::mkmp", "]"],
                                    "args": ["app"], "linux": False},
                           "machine": "microvm", "hostname": "web-1", "resolv_conf": pod + "/resolv.conf"}
        assert p.cmdline.startswith("unikraft/bin/kernel env.vars=V0=0 ")
        assert p.cmdline.endswith(" vfs.fstab=[ initrd0:/:extract::ramfs=1: m0:/etc:9pfs:::mkmp ] -- app")
        assert len(warnings) == 1 and "at risk: V8" in warnings[0] and "only the first 8" in warnings[0]
        del spec["process"]["env"][8:]
        bundle.plan(spec, str(root), environ, state)
        assert len(warnings) == 1  # 8 are fine

    def test_multiboot_gets_no_program_name(self, tmp_path):
        root, environ = self.setup(tmp_path, make_elf(32, 3, multiboot_at=64))
        p = bundle.plan({"process": {"args": ["/unikraft/bin/kernel", "a"]}}, str(root), environ)
        assert p.machine == "pc" and p.cmdline == "a" and p.guest["line"]["program"] is None

    def test_annotations(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"annotations": {"org.unikraft.runu.accel": "tcg", "org.unikraft.runu.machine": "pc"},
                "process": {"args": []}}
        p = bundle.plan(spec, str(root), dict(environ, RUNU_ACCEL="kvm"))
        assert (p.accel, p.machine) == ("tcg", "pc")
        assert opt(p.args, "-append") == ["/unikraft/bin/kernel"]  # a PVH kernel on pc: argv[0] only

    def test_default_memory(self, tmp_path):
        root, environ = self.setup(tmp_path)
        assert bundle.plan({"process": {"args": ["x"]}}, str(root), environ).memory_mib == 64

    def test_neither(self, tmp_path):
        (tmp_path / "rootfs").mkdir()
        with pytest.raises(ConfigError) as e:
            bundle.plan({"process": {"args": ["/bin/sh"]}}, str(tmp_path / "rootfs"), {})
        msg = str(e.value)
        assert msg.startswith("runu runs unikernel bundles (rootfs/unikraft/bin/kernel) and CRI "
                              "sandbox containers")
        assert msg.endswith("%s has neither" % (tmp_path / "rootfs"))

    def test_bad_kernel_and_bad_spec(self, tmp_path):
        root, environ = self.setup(tmp_path, b"nope" * 100)
        with pytest.raises(ConfigError, match="not a kernel image"):
            bundle.plan({"process": {"args": []}}, str(root), environ)
        with pytest.raises(ConfigError, match="process.args in the OCI config must be a list"):
            bundle.plan({"process": {"args": "x"}}, str(root), environ)
        with pytest.raises(ConfigError, match="annotations in the OCI config must be an object"):
            bundle.plan({"annotations": []}, str(root), environ)
        with pytest.raises(ConfigError, match="JSON object"):
            bundle.plan([], str(root), environ)

    def test_missing_qemu(self, tmp_path, monkeypatch):
        root, environ = self.setup(tmp_path, make_elf(64, 183))
        monkeypatch.setattr(host, "SYSTEM_DIRS", ())
        with pytest.raises(ConfigError, match="qemu-system-aarch64 is needed.*qemu-system-arm"):
            bundle.plan({"process": {"args": []}}, str(root), environ)


# -- settings.py: the config file ---------------------------------------------------

from mocktainer.unikraft import firecracker, settings, vmm  # noqa: E402


class TestSettings:
    def write(self, tmp_path, text):
        path = tmp_path / "config.toml"
        path.write_text(text)
        return str(path)

    def test_values_and_sources(self, tmp_path):
        path = self.write(tmp_path, 'vmm = "firecracker"\nqemu_extra_args = ["-rtc", "base=utc"]\n'
                                    'firecracker_binary = "/opt/fc"\n')
        s = settings.load({"RUNU_CONFIG": path})
        assert s.path == path
        assert s.get("vmm") == ("firecracker", "vmm in %s" % path)
        assert s.get("qemu_extra_args") == (["-rtc", "base=utc"], "qemu_extra_args in %s" % path)
        assert s.get("qemu_cpu") == (None, None)

    def test_environment_overrides_the_file(self, tmp_path):
        path = self.write(tmp_path, 'vmm = "firecracker"\naccel = "kvm"\n')
        s = settings.load({"RUNU_CONFIG": path, "RUNU_VMM": "qemu", "RUNU_ACCEL": "tcg"})
        assert s.get("vmm") == ("qemu", "environment variable RUNU_VMM")
        assert s.get("accel") == ("tcg", "environment variable RUNU_ACCEL")
        assert s.get("accel", use_env=False) == ("kvm", "accel in %s" % path)

    def test_no_file(self, tmp_path, monkeypatch):
        assert settings.load({"RUNU_CONFIG": ""}).values == {}  # empty: no config file at all
        monkeypatch.setattr(settings, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
        assert settings.load({}).values == {}  # the default file may be missing
        with pytest.raises(ConfigError, match=r"runu config file .*/absent.toml \(environment variable "
                                              r"RUNU_CONFIG\) does not exist"):
            settings.load({"RUNU_CONFIG": str(tmp_path / "absent.toml")})

    def test_tomllib_only_when_there_is_a_file(self, tmp_path):
        code = ("import sys; sys.path.insert(0, %r)\nfrom mocktainer.unikraft import settings\n"
                "settings.load({'RUNU_CONFIG': sys.argv[1]})\nprint('tomllib' in sys.modules)" % SRC)
        absent = subprocess.run([sys.executable, "-I", "-c", code, ""], capture_output=True, text=True)
        assert absent.stdout.strip() == "False", absent.stderr
        present = subprocess.run([sys.executable, "-I", "-c", code, self.write(tmp_path, "")],
                                 capture_output=True, text=True)
        assert present.stdout.strip() == "True", present.stderr

    @pytest.mark.parametrize("text,match", [
        ('vmm = "qemu"\nvm = "x"\n', "unknown key 'vm'"),
        ("vmm = 3\n", "vmm must be a backend name, not 3"),
        ('qemu_extra_args = "-rtc base=utc"\n', "qemu_extra_args must be a list of strings"),
        ("qemu_extra_args = [1]\n", "qemu_extra_args must be a list of strings"),
        ("vmm = \n", "is not valid TOML"),
    ])
    def test_invalid(self, tmp_path, text, match):
        with pytest.raises(ConfigError, match=match):
            settings.load({"RUNU_CONFIG": self.write(tmp_path, text)})

    def test_directory(self, tmp_path):
        with pytest.raises(ConfigError, match="is a directory"):
            settings.load({"RUNU_CONFIG": str(tmp_path)})


# -- vmm.py: the choice of a backend ----------------------------------------------------

class TestChooseVmm:
    def choose(self, annotations=None, environ=None, values=None):
        return vmm.choose(annotations or {}, settings.Settings(values, "/etc/runu/config.toml", environ))

    def test_precedence(self):
        assert self.choose() == ("qemu", "default")
        assert self.choose(values={"vmm": "firecracker"}) == \
            ("firecracker", "vmm in /etc/runu/config.toml")
        assert self.choose(environ={"RUNU_VMM": "qemu"}, values={"vmm": "firecracker"}) == \
            ("qemu", "environment variable RUNU_VMM")
        assert self.choose({vmm.VMM_ANNOTATION: "Firecracker"}, {"RUNU_VMM": "qemu"})[0] == "firecracker"
        assert self.choose({vmm.VMM_ANNOTATION: ""}, {"RUNU_VMM": "firecracker"})[0] == "firecracker"

    @pytest.mark.parametrize("annotations,environ,values,source", [
        ({"org.unikraft.runu.vmm": "cloud-hypervisor"}, {}, {}, "annotation org.unikraft.runu.vmm"),
        ({}, {"RUNU_VMM": "xen"}, {}, "environment variable RUNU_VMM"),
        ({}, {}, {"vmm": "bhyve"}, "vmm in /etc/runu/config.toml"),
    ])
    def test_unknown(self, annotations, environ, values, source):
        with pytest.raises(ConfigError) as e:
            self.choose(annotations, environ, values)
        assert str(e.value).startswith(source + "=")
        assert str(e.value).endswith("is not a VMM runu knows: use qemu or firecracker")

    def test_registry(self):
        for name in vmm.BACKENDS:
            module = vmm.backend(name)
            assert module.NAME == name and module.OVERHEAD_MIB > 0
            assert callable(module.launch) and callable(module.find) and callable(module.linux_params)
        with pytest.raises(ConfigError, match="no VMM backend called 'x'"):
            vmm.backend("x")

    def test_available_honours_the_binary_settings(self, tmp_path):
        fc = make_exe(tmp_path / "my-firecracker")
        qemu_bin = make_exe(tmp_path / "qemu-x86_64-custom")
        s = settings.Settings({"firecracker_binary": str(fc), "qemu_binary": str(tmp_path / "qemu-{arch}-custom")},
                              "/c", {"PATH": "/nonexistent"})
        assert vmm.available(s, "x86_64") == [("qemu", str(qemu_bin)), ("firecracker", str(fc))]
        s = settings.Settings({"firecracker_binary": str(tmp_path / "no"), "qemu_binary": str(tmp_path / "no")},
                              "/c", {"PATH": "/nonexistent"})
        assert vmm.available(s, "x86_64") == []
        assert vmm.available(settings.Settings(environ={"RUNU_FIRECRACKER_BINARY": str(fc)}), "aarch64") \
            in ([], [("qemu", shutil.which("qemu-system-aarch64"))])

    def test_feature_annotations(self, tmp_path):
        fc = make_exe(tmp_path / "fc")
        ann = vmm.feature_annotations({"RUNU_CONFIG": "", "RUNU_FIRECRACKER_BINARY": str(fc),
                                       "RUNU_VMM": "firecracker"})
        assert "firecracker" in ann["org.unikraft.runu.vmm.available"].split(",")
        assert ann["org.unikraft.runu.vmm.default"] == "firecracker"
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items())
        broken = tmp_path / "broken.toml"
        broken.write_text("vmm = [")
        assert vmm.feature_annotations({"RUNU_CONFIG": str(broken)})["org.unikraft.runu.vmm.default"] == "qemu"


# -- qemu.py: CPU model, extra arguments, binary setting, Linux -----------------------------

class TestQemuKnobs:
    @pytest.mark.parametrize("model", ["max", "host,-arch-capabilities", "Skylake-Client-v4,+pdpe1gb,vmx=on",
                                       "cortex-a57", "qemu64,kvm_pv_unhalt=on"])
    def test_cpu_model_ok(self, model):
        assert qemu.check_cpu_model(model, "annotation x") == model

    @pytest.mark.parametrize("model", ["", "-max", "max,", "max,,file=/etc/passwd", "max -monitor stdio",
                                       "max,x=/dev/kvm", "max\n", "host,+", "é", "a" * 300, None, 3])
    def test_cpu_model_refused(self, model):
        with pytest.raises(ConfigError, match="is not a CPU model"):
            qemu.check_cpu_model(model, "annotation org.unikraft.runu.qemu.cpu")

    @pytest.mark.parametrize("words", [
        [], ["-rtc", "base=localtime,clock=vm,driftfix=slew"], ["--rtc", "base=utc"],
        ["-machine", "pit=on,rtc=off"], ["-M", "acpi=off"], ["-overcommit", "cpu-pm=on"],
        ["-msg", "timestamp=on"], ["-icount", "shift=auto,sleep=off"], ["-icount", "shift=3"],
        ["-device", "virtio-rng-pci"], ["-device", "virtio-rng-device,max-bytes=1024,period=1000,id=rng0"],
        ["-device", "pvpanic"], ["-device", "i8042"],
    ])
    def test_extra_args_allowed(self, words):
        assert qemu.check_extra_args(words, "annotation x") == words

    @pytest.mark.parametrize("words", [
        ["-monitor", "stdio"], ["-qmp", "stdio"], ["-qmp", "unix:/tmp/q,server"], ["-chardev", "stdio,id=x"],
        ["-serial", "mon:stdio"], ["-drive", "file=/etc/shadow"], ["-kernel", "/boot/vmlinuz"],
        ["-initrd", "/x"], ["-append", "x"], ["-device", "virtio-blk-pci,drive=d0"],
        ["-device", "virtio-rng-pci,rng=r0"], ["-device", "virtio-serial,file=/x"], ["-device", "loader,file=/x"],
        ["-device", "help"], ["-object", "rng-random,filename=/dev/sda,id=r"], ["-sandbox", "off"],
        ["-daemonize"], ["-pidfile", "/x"], ["-incoming", "tcp:0:4444"], ["-readconfig", "/x"],
        ["-loadvm", "s"], ["-netdev", "user,id=n"], ["-fsdev", "local,path=/,id=f"], ["-virtfs", "local,path=/"],
        ["-bios", "/x"], ["-L", "/"], ["-D", "/tmp/log"], ["-trace", "file=/x"], ["-plugin", "/x.so"],
        ["-M", "microvm"], ["-machine", "pc,pit=on"], ["-machine", "dumpdtb=/x"], ["-machine", "pit=on,,x=y"],
        ["-machine", "kernel=/x"], ["-machine", "firmware=/x"], ["-rtc", "base=/etc"], ["-rtc"],
        ["-icount", "rr=record,rrfile=/x"], ["-icount", "shift=99"], ["-overcommit", "mem-lock=maybe"],
        ["-overcommit", "mem-lock=on"],
        ["-S"], ["-s"], ["-gdb", "tcp::1234"], ["-smp", "64"], ["-m", "100G"], ["-accel", "kvm"],
        ["-cpu", "max"], ["-name", "x,debug-threads=on"], ["-rtc", "base=utc", "-monitor", "stdio"],
        ["base=utc"], ["-nodefaults"], ["-enable-kvm"], ["-no-reboot"], ["-no-shutdown"], ["-vnc", ":0"],
        ["-display", "gtk"], ["-nographic"], ["-writeconfig", "/x"], ["-mem-path", "/x"],
        ["-option-rom", "/x"], ["-device", "virtio-rng-pci,id=../../x"],
    ])
    def test_extra_args_refused(self, words):
        with pytest.raises(ConfigError, match=r"^annotation org.unikraft.runu.qemu.extra-args: "):
            qemu.check_extra_args(words, "annotation org.unikraft.runu.qemu.extra-args")

    def test_parse_extra_args(self):
        src = "annotation x"
        assert qemu.parse_extra_args(' ["-rtc", "base=utc"]', src) == ["-rtc", "base=utc"]
        assert qemu.parse_extra_args("-rtc  base=utc\n-msg timestamp=on", src) == \
            ["-rtc", "base=utc", "-msg", "timestamp=on"]
        assert qemu.parse_extra_args(["-rtc", "base=utc"], src) == ["-rtc", "base=utc"]
        with pytest.raises(ConfigError, match="is not a valid JSON list"):
            qemu.parse_extra_args('["-rtc",', src)
        with pytest.raises(ConfigError, match="must be a list of strings"):
            qemu.parse_extra_args('["-rtc", 1]', src)

    def test_qemu_args_checks_what_it_is_given(self):
        k = fake_kernel()
        a = qemu.qemu_args("/q", k, memory_mib=64, cmdline="", accel="kvm", cpu="max",
                           extra_args=["-rtc", "base=utc"])
        assert opt(a, "-cpu") == ["max"] and opt(a, "-rtc") == ["base=utc"]
        assert a.index("-rtc") < a.index("-kernel")
        with pytest.raises(ConfigError):
            qemu.qemu_args("/q", k, memory_mib=64, cmdline="", accel="kvm", extra_args=["-monitor", "stdio"])
        with pytest.raises(ConfigError):
            qemu.qemu_args("/q", k, memory_mib=64, cmdline="", accel="kvm", cpu="max -S")

    def test_nic_hook_ignores_extra_machine_properties(self):
        a = qemu.qemu_args("/q", fake_kernel(), memory_mib=64, cmdline="", accel="tcg",
                           extra_args=["-machine", "rtc=on"])
        assert qemu.nic_args(a, [(3, "02:00:00:00:00:01")])[3].startswith("virtio-net-device,")

    def test_configured_binary(self, tmp_path):
        exe = make_exe(tmp_path / "qemu-x86_64-mine")
        assert qemu.qemu_binary("x86_64", "/nonexistent", str(tmp_path / "qemu-{arch}-mine"), "src") == str(exe)
        with pytest.raises(ConfigError, match=r"^environment variable RUNU_QEMU_BINARY names QEMU '/no/qemu', "
                                              r"which cannot be used: /no/qemu is not an executable file$"):
            qemu.qemu_binary("x86_64", None, "/no/qemu", "environment variable RUNU_QEMU_BINARY")

    def test_linux_machines(self):
        assert qemu.machine_for(fake_kernel(protocol="linux", elf_class=None)) == "pc"
        assert qemu.machine_for(fake_kernel(protocol="pvh", linux=True)) == "pc"
        assert qemu.machine_for(fake_kernel(protocol="pvh", linux=True), "microvm") == "microvm"
        with pytest.raises(ConfigError, match="ELF vmlinux without a PVH entry note.*firecracker"):
            qemu.machine_for(fake_kernel(protocol="elf", linux=True))

    def test_linux_params(self):
        assert qemu.linux_params(fake_kernel(protocol="linux")) == ("console=ttyS0", "panic=-1")
        assert qemu.linux_params(fake_kernel("aarch64", "elf", linux=True))[0] == "console=ttyAMA0"
        assert firecracker.linux_params(fake_kernel(linux=True)) == \
            ("console=ttyS0", "reboot=k", "panic=1", "pci=off")


class TestLinuxCmdline:
    defaults = ("console=ttyS0", "panic=-1")

    def test_defaults_env_params_and_init_args(self):
        line = bundle.linux_cmdline(["/unikraft/bin/kernel", "quiet", "--", "hello", "two words"],
                                    ["PATH=/bin", "GREETING=hi there"], self.defaults)
        assert line == 'console=ttyS0 panic=-1 PATH=/bin "GREETING=hi there" quiet -- hello "two words"'

    def test_user_console_wins(self):
        # without "--" every word is /init's, as every word is the application's for Unikraft
        assert bundle.linux_cmdline(["console=hvc0", "panic=5"], [], self.defaults) == \
            "console=ttyS0 panic=-1 -- console=hvc0 panic=5"
        assert bundle.linux_cmdline(["console=hvc0", "panic=5", "--"], [], self.defaults) == \
            "console=hvc0 panic=5"

    def test_nothing(self):
        assert bundle.linux_cmdline([], [], self.defaults) == "console=ttyS0 panic=-1"
        assert bundle.linux_cmdline(["/unikraft/bin/kernel"], []) == ""

    @pytest.mark.parametrize("args,env,match", [
        (["--", 'say "hi"'], [], "double quote"), (["--", ""], [], "empty string"),
        (["--", "a\0b"], [], "NUL byte"), ([], ["NOVALUE"], "not of the form NAME=value"),
    ])
    def test_inexpressible(self, args, env, match):
        with pytest.raises(ConfigError, match=match):
            bundle.linux_cmdline(args, env, self.defaults)


# -- firecracker.py ------------------------------------------------------------------------------

def fc_vm(kernel=None, annotations=None, environ=None, values=None, state_dir="/run/runu/fc-1",
          memory=64, vcpus=1, cmdline="exit=3 -- hi"):
    s = settings.Settings(values, "/etc/runu/config.toml", environ if environ is not None else {})
    return vmm.VM(kernel or fake_kernel(), cmdline, memory, vcpus, annotations or {}, s, state_dir,
                  os.path.basename(state_dir) if state_dir else None)


class TestFirecracker:
    def launch(self, vm, kvm=True, hw=True):
        return firecracker.launch(vm, kvm_check=lambda: kvm, hwvirt_check=lambda: hw)

    def fc(self, tmp_path):
        return str(make_exe(tmp_path / "firecracker"))

    def test_launch(self, tmp_path):
        fc = self.fc(tmp_path)
        k = fake_kernel(initrd="/bundle/rootfs/unikraft/bin/initrd")
        launch = self.launch(fc_vm(k, environ={"PATH": str(tmp_path)}, memory=48, vcpus=2))
        assert launch.args == [fc, "--api-sock", "/run/runu/fc-1/firecracker.sock", "--level", "Error", "--id", "fc-1"]
        assert launch.setup["socket"] == "/run/runu/fc-1/firecracker.sock"
        assert list(launch.files) == ["firecracker.json"]
        import json
        assert json.loads(launch.files["firecracker.json"]) == {
            "boot-source": {"kernel_image_path": "/bundle/rootfs/unikraft/bin/kernel",
                            "initrd_path": "/bundle/rootfs/unikraft/bin/initrd", "boot_args": "exit=3 -- hi"},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 48},
            "drives": [],
        }
        assert (launch.accel, launch.machine) == ("kvm", None)

    def test_empty_boot_args_are_kept_and_no_initrd(self, tmp_path):
        import json
        launch = self.launch(fc_vm(cmdline="", environ={"PATH": str(tmp_path)}))
        self.fc(tmp_path)
        boot = json.loads(launch.files["firecracker.json"])["boot-source"]
        assert boot == {"kernel_image_path": "/bundle/rootfs/unikraft/bin/kernel", "boot_args": ""}

    @pytest.mark.parametrize("cid", ["a_b", "a.b", "x" * 65])
    def test_id_firecracker_would_refuse_is_not_passed(self, tmp_path, cid):
        self.fc(tmp_path)
        assert "--id" not in self.launch(fc_vm(state_dir="/run/runu/" + cid, environ={"PATH": str(tmp_path)})).args

    def test_binary_settings(self, tmp_path):
        fc = self.fc(tmp_path)
        other = str(make_exe(tmp_path / "fc-other"))
        assert self.launch(fc_vm(values={"firecracker_binary": other}, environ={"PATH": str(tmp_path)})).args[0] \
            == other
        assert self.launch(fc_vm(values={"firecracker_binary": other},
                                 environ={"RUNU_FIRECRACKER_BINARY": fc})).args[0] == fc
        with pytest.raises(ConfigError) as e:
            self.launch(fc_vm(environ={"RUNU_FIRECRACKER_BINARY": "/nonexistent/firecracker"}))
        assert str(e.value) == ("environment variable RUNU_FIRECRACKER_BINARY names firecracker "
                                "'/nonexistent/firecracker', which cannot be used: /nonexistent/firecracker is "
                                "not an executable file")
        with pytest.raises(ConfigError, match="firecracker_binary in /etc/runu/config.toml names firecracker"):
            self.launch(fc_vm(values={"firecracker_binary": "/nonexistent/fc"}))

    def test_missing_binary_names_the_setting(self, tmp_path, monkeypatch):
        monkeypatch.setattr(host, "SYSTEM_DIRS", ())
        with pytest.raises(ConfigError) as e:
            self.launch(fc_vm(environ={"PATH": str(tmp_path)}))
        msg = str(e.value)
        assert msg.startswith("the firecracker VMM is needed but firecracker not found in PATH")
        assert "firecracker_binary" in msg and "RUNU_FIRECRACKER_BINARY" in msg and "setup-firecracker.sh" in msg

    @pytest.mark.parametrize("k,match", [
        (fake_kernel(protocol="linux", elf_class=None), "a Linux bzImage: put the uncompressed ELF vmlinux"),
        (fake_kernel(protocol="multiboot", elf_class=32), "only ELF64 kernels.*32-bit multiboot image"),
        (fake_kernel(protocol="pvh", elf_class=32), "only ELF64 kernels"),
        (fake_kernel(protocol="multiboot"), "a multiboot kernel without a PVH entry note"),
        (fake_kernel("aarch64", "elf"), "runs x86_64 kernels here"),
    ])
    def test_kernels_it_cannot_boot(self, tmp_path, k, match):
        self.fc(tmp_path)
        with pytest.raises(ConfigError, match=match) as e:
            self.launch(fc_vm(k, environ={"PATH": str(tmp_path)}))
        assert "org.unikraft.runu.vmm=qemu" in str(e.value)

    def test_kernels_it_boots(self, tmp_path):
        self.fc(tmp_path)
        for k in (fake_kernel(), fake_kernel(protocol="elf", linux=True), fake_kernel(protocol="elf"),
                  fake_kernel(protocol="pvh", linux=True)):
            assert self.launch(fc_vm(k, environ={"PATH": str(tmp_path)})).files

    def test_kvm(self, tmp_path):
        self.fc(tmp_path)
        env = {"PATH": str(tmp_path)}
        with pytest.raises(ConfigError, match=r"^the firecracker VMM needs KVM, but /dev/kvm is missing or not "
                                              r"usable .*: use the qemu VMM .* with TCG$"):
            self.launch(fc_vm(environ=env), kvm=False)
        with pytest.raises(ConfigError, match="Linux guests crash"):
            self.launch(fc_vm(fake_kernel(protocol="elf", linux=True), environ=env), hw=False)
        assert self.launch(fc_vm(environ=env), hw=False).args  # a unikernel runs without vmx/svm

    def test_accel_knob(self, tmp_path):
        self.fc(tmp_path)
        env = {"PATH": str(tmp_path)}
        for ann in ({"org.unikraft.runu.accel": "kvm"}, {"org.unikraft.runu.accel": "auto"}):
            assert self.launch(fc_vm(annotations=ann, environ=env)).accel == "kvm"
        with pytest.raises(ConfigError, match=r"^annotation org.unikraft.runu.accel='tcg' but the firecracker "
                                              r"VMM runs guests only under KVM"):
            self.launch(fc_vm(annotations={"org.unikraft.runu.accel": "tcg"}, environ=env))
        with pytest.raises(ConfigError, match=r"^environment variable RUNU_ACCEL='tcg' but"):
            self.launch(fc_vm(environ=dict(env, RUNU_ACCEL="tcg")))
        with pytest.raises(ConfigError, match="'warp' is not a valid accelerator"):
            self.launch(fc_vm(annotations={"org.unikraft.runu.accel": "warp"}, environ=env))

    def test_needs_a_state_directory(self, tmp_path):
        self.fc(tmp_path)
        with pytest.raises(ConfigError, match="needs the container's state directory"):
            self.launch(fc_vm(state_dir=None, environ={"PATH": str(tmp_path)}))

    def test_vcpus(self, tmp_path):
        self.fc(tmp_path)
        with pytest.raises(ConfigError, match="1 to 32 vCPUs"):
            self.launch(fc_vm(vcpus=33, environ={"PATH": str(tmp_path)}))


class TestPlanBackends:
    def setup(self, tmp_path, data=None, config=""):
        root = make_rootfs(tmp_path, data if data is not None else make_elf(64, 62, pvh=True))
        bindir = tmp_path / "bin"
        bindir.mkdir()
        make_exe(bindir / "qemu-system-x86_64")
        make_exe(bindir / "firecracker")
        cfg = tmp_path / "config.toml"
        cfg.write_text(config)
        return root, {"PATH": str(bindir), "RUNU_CONFIG": str(cfg)}

    def test_firecracker_plan(self, tmp_path, monkeypatch):
        import json
        monkeypatch.setattr(qemu, "kvm_usable", lambda device=None: True)
        monkeypatch.setattr(firecracker, "check_accel", lambda vm, *a: None)
        root, environ = self.setup(tmp_path)
        spec = {"annotations": {"org.unikraft.runu.vmm": "firecracker"},
                "process": {"args": ["/unikraft/bin/kernel", "exit=3"], "env": ["A=1"]},
                "linux": {"resources": {"memory": {"limit": 80 << 20}, "cpu": {"cpus": "0"}}}}
        p = bundle.plan(spec, str(root), environ, "/run/runu/c1")
        assert p.vmm == "firecracker" and p.args[0] == str(tmp_path / "bin" / "firecracker")
        assert p.memory_mib == 80 - firecracker.OVERHEAD_MIB - vmm.SUPERVISOR_MIB == 56 and p.vcpus == 1
        config = json.loads(p.files["firecracker.json"])
        assert config["machine-config"] == {"vcpu_count": 1, "mem_size_mib": 56}
        assert config["boot-source"]["boot_args"] == p.cmdline == "/unikraft/bin/kernel env.vars=A=1 -- exit=3"

    def test_config_file_and_env_choose(self, tmp_path, monkeypatch):
        monkeypatch.setattr(firecracker, "check_accel", lambda vm, *a: None)
        root, environ = self.setup(tmp_path, config='vmm = "firecracker"\nqemu_cpu = "max,+pdpe1gb"\n'
                                                     'qemu_extra_args = ["-rtc", "base=utc"]\n')
        spec = {"process": {"args": []}}
        assert bundle.plan(spec, str(root), environ, "/run/runu/c1").vmm == "firecracker"
        p = bundle.plan(spec, str(root), dict(environ, RUNU_VMM="qemu", RUNU_ACCEL="tcg"), "/run/runu/c1")
        assert p.vmm == "qemu" and p.files == {}
        assert opt(p.args, "-cpu") == ["max,+pdpe1gb"] and opt(p.args, "-rtc") == ["base=utc"]
        spec = {"annotations": {"org.unikraft.runu.vmm": "qemu", "org.unikraft.runu.qemu.cpu": "qemu64",
                                "org.unikraft.runu.qemu.extra-args": '["-msg", "timestamp=on"]'},
                "process": {"args": []}}
        p = bundle.plan(spec, str(root), dict(environ, RUNU_ACCEL="tcg"))
        assert opt(p.args, "-cpu") == ["qemu64"]
        assert opt(p.args, "-rtc") == ["base=utc"] and opt(p.args, "-msg") == ["timestamp=on"]

    @pytest.mark.parametrize("annotations,match", [
        ({"org.unikraft.runu.vmm": "vmware"}, "annotation org.unikraft.runu.vmm='vmware' is not a VMM runu knows"),
        ({"org.unikraft.runu.qemu.cpu": "max -monitor stdio"}, "annotation org.unikraft.runu.qemu.cpu="),
        ({"org.unikraft.runu.qemu.extra-args": "-monitor stdio"},
         "annotation org.unikraft.runu.qemu.extra-args: QEMU option '-monitor' is not allowed"),
        ({"org.unikraft.runu.qemu.extra-args": '["-device", "loader,file=/etc/shadow"]'},
         "-device 'loader' is not allowed"),
    ])
    def test_bad_annotations(self, tmp_path, annotations, match):
        root, environ = self.setup(tmp_path)
        with pytest.raises(ConfigError, match=match):
            bundle.plan({"annotations": annotations, "process": {"args": []}}, str(root),
                        dict(environ, RUNU_ACCEL="tcg"))

    def test_bad_config_file(self, tmp_path):
        root, environ = self.setup(tmp_path, config='qemu_extra_args = ["-qmp", "stdio"]\n')
        with pytest.raises(ConfigError, match=r"^qemu_extra_args in .*config.toml: QEMU option '-qmp'"):
            bundle.plan({"process": {"args": []}}, str(root), dict(environ, RUNU_ACCEL="tcg"))

    def test_sandbox_ignores_the_vmm_settings(self, tmp_path):
        root = tmp_path / "rootfs"
        root.mkdir()
        make_exe(root / "pause")
        spec = dict(sandbox_spec(["/pause"]), annotations={"io.kubernetes.cri.container-type": "sandbox",
                                                           "org.unikraft.runu.vmm": "nope"})
        p = bundle.plan(spec, str(root), {"RUNU_CONFIG": str(tmp_path / "absent.toml")})
        assert p.kind == "sandbox" and p.files == {}

    def test_linux_bzimage_under_qemu(self, tmp_path):
        root, environ = self.setup(tmp_path, make_bzimage())
        p = bundle.plan({"process": {"args": ["/unikraft/bin/kernel", "--", "hi"], "env": ["PATH=/bin"]}},
                        str(root), dict(environ, RUNU_ACCEL="tcg"))
        assert p.kernel.linux and p.machine == "pc"
        assert p.memory_mib == bundle.DEFAULT_LINUX_MEMORY_MIB  # no limit: enough for a distribution kernel
        assert opt(p.args, "-append") == ["console=ttyS0 panic=-1 PATH=/bin -- hi"]
        assert "-no-reboot" in p.args
        assert "pvpanic" in opt(p.args, "-device") and opt(p.args, "-action") == ["panic=exit-failure"]

    def test_linux_vmlinux_under_firecracker(self, tmp_path, monkeypatch):
        import json
        monkeypatch.setattr(firecracker, "check_accel", lambda vm, *a: None)
        root, environ = self.setup(tmp_path, make_elf(64, 62, linux_note=True))
        p = bundle.plan({"annotations": {"org.unikraft.runu.vmm": "firecracker"},
                         "process": {"args": ["console=hvc0", "--", "x"]}}, str(root), environ, "/s/c")
        assert json.loads(p.files["firecracker.json"])["boot-source"]["boot_args"] == \
            "reboot=k panic=1 pci=off console=hvc0 -- x"

    def test_memory_below_the_minimum_names_the_backend(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"process": {"args": []}, "linux": {"resources": {"memory": {"limit": 64 << 20}}}}
        with pytest.raises(ConfigError, match="too small for a qemu VM: runu keeps 72 MiB .* at least 80 MiB"):
            bundle.plan(spec, str(root), dict(environ, RUNU_ACCEL="tcg"))
        spec["annotations"] = {"org.unikraft.runu.vmm": "firecracker"}
        spec["linux"]["resources"]["memory"]["limit"] = 20 << 20
        with pytest.raises(ConfigError, match="too small for a firecracker VM: .* at least 32 MiB"):
            bundle.plan(spec, str(root), environ, "/s/c")


def test_runtime_writes_only_plain_vmm_files(tmp_path):
    from mocktainer import runtime
    runtime.write_files(str(tmp_path), {"firecracker.json": b"{}"})
    assert (tmp_path / "firecracker.json").read_bytes() == b"{}"
    assert (tmp_path / "firecracker.json").stat().st_mode & 0o777 == 0o600
    for bad in ("", "../x", "a/b", "state.json", "exec.fifo", ".."):
        with pytest.raises(ConfigError, match="invalid VMM file name"):
            runtime.write_files(str(tmp_path), {bad: b""})
    with pytest.raises(mocktainer_error.Error, match="cannot write"):
        runtime.write_files(str(tmp_path), {"firecracker.json": b"again"})  # never over an existing file


# -- integration: boot the tiny kernel in QEMU ------------------------------------

GUEST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest")
GREETING = "Hello from the runu test kernel"
HAVE_QEMU = shutil.which("qemu-system-x86_64") is not None or os.path.exists(
    "/usr/bin/qemu-system-x86_64")
HAVE_BUILDER = os.path.exists(os.path.join(GUEST_DIR, "build.py")) and shutil.which("gcc")

integration = pytest.mark.skipif(not (HAVE_QEMU and HAVE_BUILDER),
                                 reason="needs qemu-system-x86_64, gcc and tests/guest/build.py")


@pytest.fixture(scope="module")
def tiny_kernels(tmp_path_factory):
    sys.path.insert(0, GUEST_DIR)
    try:
        import build
    finally:
        sys.path.remove(GUEST_DIR)
    out = str(tmp_path_factory.mktemp("tiny"))
    return {fmt: build.build_tiny(out, fmt) for fmt in ("pvh", "multiboot")}


def unikernel_bundle(tmp_path, kernel_path):
    root = tmp_path / "rootfs"
    (root / "unikraft" / "bin").mkdir(parents=True)
    shutil.copy(kernel_path, root / "unikraft" / "bin" / "kernel")
    return root


def run_vmm(p, timeout=120):
    """Run the planned VMM like the container init would: argv and env from the plan."""
    env = dict(e.split("=", 1) for e in p.env)
    proc = subprocess.Popen(p.args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


ACCELS = ["tcg", "auto"]


@integration
@pytest.mark.integration
@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("fmt,machine", [("pvh", "microvm"), ("multiboot", "pc")])
def test_boot_exit_status_and_args(tmp_path, tiny_kernels, fmt, machine, accel):
    root = unikernel_bundle(tmp_path, tiny_kernels[fmt])
    spec = {"annotations": {"org.unikraft.runu.accel": accel},
            "process": {"args": ["/unikraft/bin/kernel", "exit=5", "--", "hello", "world"],
                        "env": ["GREETING=hi"]}}
    p = bundle.plan(spec, str(root), {"PATH": "/nonexistent"})
    assert p.kernel.boot_protocol == fmt and p.machine == machine
    assert os.path.dirname(p.args[0]) in host.SYSTEM_DIRS
    t0 = time.monotonic()
    rc, out, err = run_vmm(p)
    elapsed = time.monotonic() - t0
    assert GREETING in out, (out, err)
    lines = out.splitlines()
    cmdline = [ln for ln in lines if ln.startswith("cmdline: ")][0]
    # multiboot: QEMU puts the kernel path first, as Unikraft expects.
    assert cmdline.endswith("env.vars=GREETING=hi exit=5 -- hello world"), cmdline
    assert "arg: hello" in lines and "arg: world" in lines
    assert "bye 5" in lines
    assert rc == (5 << 1) | 1, (rc, out, err)
    assert err == "", err  # nothing from QEMU on stderr (no CPU feature warnings)
    print("%s/%s (%s) booted and exited in %.0f ms" % (fmt, machine, p.accel, elapsed * 1000))


@integration
@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_guest_reset_ends_vmm(tmp_path, tiny_kernels, fmt):
    root = unikernel_bundle(tmp_path, tiny_kernels[fmt])
    p = bundle.plan({"process": {"args": ["reset"]}}, str(root), {"RUNU_ACCEL": "tcg"})
    rc, out, err = run_vmm(p)
    assert "bye reset" in out, (out, err)
    assert rc == 0


@integration
@pytest.mark.integration
def test_awkward_args_reach_guest_verbatim(tmp_path, tiny_kernels):
    root = unikernel_bundle(tmp_path, tiny_kernels["pvh"])
    args = ["/unikraft/bin/kernel", "--", "two words", "it's", 'say "hi"']
    p = bundle.plan({"process": {"args": args}}, str(root), {"RUNU_ACCEL": "tcg"})
    rc, out, err = run_vmm(p)
    cmdline = [ln for ln in out.splitlines() if ln.startswith("cmdline: ")][0]
    assert cmdline == "cmdline: " + p.cmdline
    assert unikraft_argv(cmdline[len("cmdline: "):]) == ("/unikraft/bin/kernel", [], args[2:])
    assert [ln[5:] for ln in out.splitlines() if ln.startswith("arg: ")] == args[2:]
    assert rc == 1  # exit=0 by default


@integration
@pytest.mark.integration
def test_idle_guest_on_a_pty_is_killed(tmp_path, tiny_kernels):
    """A pty as the VMM's stdio (ctr run -t): the console shows there; SIGKILL ends it."""
    root = unikernel_bundle(tmp_path, tiny_kernels["pvh"])
    p = bundle.plan({"process": {"args": ["idle"]}, "terminal": True}, str(root),
                    {"RUNU_ACCEL": "tcg"})
    master, slave = os.openpty()
    env = dict(e.split("=", 1) for e in p.env)
    proc = subprocess.Popen(p.args, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    buf = b""
    try:
        deadline = time.monotonic() + 60
        while b"idling" not in buf and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 1)
            if r:
                try:
                    buf += os.read(master, 4096)
                except OSError:
                    break
        assert GREETING.encode() in buf and b"idling" in buf, buf
        assert proc.poll() is None  # idles until killed
    finally:
        proc.kill()
        proc.wait(timeout=30)
        os.close(master)
    assert proc.returncode == -9


# -- exit_status: the VMM's raw wait status -> the container's exit code ---------------------------------------

def exited(code):
    return code << 8


def killed(sig):
    return sig


class TestExitStatus:
    @pytest.mark.parametrize("status,reason,code,says", [
        (exited(83), None, 0, None),                     # Unikraft's clean halt (41 to 0x501)
        (exited(85), None, 1, "the guest crashed"),      # Unikraft's crash (42 to 0x501)
        (exited(85), "guest-shutdown", 1, "the guest crashed"),
        (exited(0), None, 0, None),                      # ACPI power-off, or QEMU quit
        (exited(0), "guest-shutdown", 0, None),
        (exited(0), "host-qmp-quit", 0, None),
        (exited(0), "guest-reset", 1, "triple fault"),   # -no-reboot: a reset ends QEMU with 0
        (exited(0), "guest-panic", 1, "panicked"),
        (exited(0), "internal-error", 1, "KVM internal error"),
        (exited(1), None, 1, "QEMU exited with status 1"),
        (exited(1), "guest-panic", 1, "panicked"),       # -action panic=exit-failure
        (exited(7), None, 7, None),                      # runu's test kernels: (3 << 1) | 1, unchanged
        (exited(11), "guest-shutdown", 11, None),
        (killed(9), None, 137, None),
        (killed(15), "guest-reset", 143, None),
    ])
    def test_qemu(self, status, reason, code, says):
        got, message = qemu.exit_status(status, reason)
        assert got == code
        if says is None:
            assert message is None
        else:
            assert says in message

    @pytest.mark.parametrize("status,code,says", [
        (exited(0), 0, None),        # an i8042 reset: Unikraft's halt and crash alike, a triple fault too
        (exited(1), 1, "failed"),
        (exited(148), 148, "seccomp"),
        (exited(152), 152, "configuration"),
        (exited(42), 42, "status 42"),
        (killed(9), 137, None),
    ])
    def test_firecracker(self, status, code, says):
        got, message = firecracker.exit_status(status)
        assert got == code
        assert (message is None) if says is None else (says in message)

    def test_real_wait_statuses(self):
        """The mapping reads what os.waitpid really returns."""
        import subprocess as sp

        p = sp.Popen(["sh", "-c", "exit 83"])
        _, status = os.waitpid(p.pid, 0)
        p.returncode = 0
        assert qemu.exit_status(status) == (0, None)
        p = sp.Popen(["sleep", "30"])
        p.kill()
        _, status = os.waitpid(p.pid, 0)
        p.returncode = 0
        assert qemu.exit_status(status) == (137, None) and firecracker.exit_status(status) == (137, None)
