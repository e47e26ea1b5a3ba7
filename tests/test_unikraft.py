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

from mocktainer.error import ConfigError  # noqa: E402
from mocktainer.unikraft import bundle, kernel, qemu  # noqa: E402
from mocktainer.unikraft.kernel import Kernel  # noqa: E402

EM_RISCV = 243


# -- synthetic kernels ---------------------------------------------------------

def make_elf(elf_class=64, machine=62, *, big_endian=False, pvh=False, note_align=4,
             multiboot_at=None, multiboot_checksum_ok=True, other_note=False, size=8192):
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


def fake_kernel(arch="x86_64", protocol="pvh", elf_class=64, initrd=None):
    return Kernel("/bundle/rootfs/unikraft/bin/kernel", initrd, arch, elf_class, protocol)


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
        assert (k.arch, k.elf_class, k.boot_protocol) == ("x86_64", None, "linux")

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
        assert qemu.find_binary("qemu-system-x86_64", str(tmp_path)) == \
            str(tmp_path / "qemu-system-x86_64")

    def test_system_dirs_after_a_tiny_path(self, tmp_path):
        found = qemu.find_binary("sh", str(tmp_path))
        assert os.path.dirname(found) in qemu.SYSTEM_DIRS
        assert qemu.find_binary("sh", None) == found
        assert qemu.find_binary("sh", "") == found

    def test_not_executable_or_directory_skipped(self, tmp_path):
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        make_exe(a / "tool", mode=0o644)
        (b / "tool").mkdir()
        with pytest.raises(ConfigError, match="tool not found in PATH"):
            qemu.find_binary("tool", "%s:%s" % (a, b))

    def test_empty_path_entry_is_not_cwd(self, tmp_path, monkeypatch):
        make_exe(tmp_path / "tool")
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError):
            qemu.find_binary("tool", ":/nonexistent:")

    def test_qemu_binary_names_the_debian_package(self, tmp_path, monkeypatch):
        monkeypatch.setattr(qemu, "SYSTEM_DIRS", ())
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
        assert qemu.kvm_usable("/dev/null") is False
        assert qemu.kvm_usable(str(tmp_path / "kvm")) is False

    def test_real_device_matches_api_version(self):
        if not os.path.exists("/dev/kvm"):
            pytest.skip("no /dev/kvm")
        assert qemu.kvm_usable() in (True, False)


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
        arm = fake_kernel("aarch64" if qemu.host_arch() != "aarch64" else "x86_64")
        assert self.choose(kernel=arm, kvm=True) == "tcg"
        with pytest.raises(ConfigError, match="cannot use KVM on this"):
            self.choose({qemu.ACCEL_ANNOTATION: "kvm"}, kernel=arm, kvm=True)

    def test_linux_guest_needs_hardware_virtualisation(self):
        linux = fake_kernel(qemu.host_arch(), "linux", None)
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
        assert opt(a, "-device") == ["isa-debug-exit,iobase=0xf4,iosize=4"]
        assert opt(a, "-kernel") == ["/bundle/rootfs/unikraft/bin/kernel"]
        assert opt(a, "-append") == ["a -- b"]
        assert opt(a, "-m") == ["64M"]
        assert opt(a, "-accel") == ["tcg"]
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
    """Python model of Unikraft's uk_argnparse: blanks split, quotes group, no escapes."""
    argv, cur, in_word, quote = [], [], False, None
    for ch in line:
        if ch in " \r\n\t\v" and not quote:
            if in_word:
                argv.append("".join(cur))
                cur, in_word = [], False
            continue
        if ch in "'\"":
            if not quote:
                quote = ch
                continue
            if quote == ch:
                quote = None
                continue
        if not in_word:
            in_word = True
        cur.append(ch)
    if in_word:
        argv.append("".join(cur))
    return argv


def unikraft_view(line):
    """(env, library params, application args) as a Unikraft kernel sees `line`."""
    argv = uk_argnparse(line)
    if "--" in argv:
        i = argv.index("--")
        params, app = argv[:i], argv[i + 1:]
    else:
        params, app = [], argv
    env = [p[len("env.vars="):] for p in params if p.startswith("env.vars=")]
    return env, [p for p in params if not p.startswith("env.vars=")], app


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
        assert line == "-- -x -- y"
        assert unikraft_view(line) == ([], [], ["-x", "--", "y"])

    @pytest.mark.parametrize("word", AWKWARD)
    def test_awkward_word_round_trips(self, word):
        args = ["/unikraft/bin/kernel", "p.q=" + word, "--", "app", word, "end"]
        env = ["V=" + word, "W=" + word + "]"]
        line = bundle.guest_cmdline(args, env)
        assert unikraft_view(line) == (env, ["p.q=" + word], ["app", word, "end"])

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
        (None, 64), (-1, 64), (0, 64), (64 << 20, 64), ((64 << 20) + 1, 65), (8 << 20, 8),
        ((8 << 20) - (1 << 20) + 1, 8), (1 << 30, 1024),
    ])
    def test_memory(self, limit, mib):
        res = {} if limit is None else {"memory": {"limit": limit}}
        assert bundle.memory_mib(res) == mib

    @pytest.mark.parametrize("limit", [1, 1 << 20, (7 << 20)])
    def test_memory_too_small(self, limit):
        with pytest.raises(ConfigError, match="at least 8 MiB"):
            bundle.memory_mib({"memory": {"limit": limit}})

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
        return root, {"PATH": str(bindir), "RUNU_ACCEL": "tcg"}

    def test_plan(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"process": {"args": ["/unikraft/bin/kernel", "-v"], "env": ["A=1"]},
                "linux": {"resources": {"memory": {"limit": 100 << 20}}}}
        p = bundle.plan(spec, str(root), environ)
        assert p.kind == "unikernel"
        assert p.args[0] == str(tmp_path / "bin" / "qemu-system-x86_64")
        assert p.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        assert p.cmdline == "env.vars=A=1 -- -v"
        assert opt(p.args, "-append") == ["env.vars=A=1 -- -v"]
        assert opt(p.args, "-m") == ["100M"] and p.memory_mib == 100
        assert opt(p.args, "-accel") == ["tcg"] and p.accel == "tcg"
        assert opt(p.args, "-M") == ["microvm"] and p.machine == "microvm"
        assert opt(p.args, "-kernel") == [str(root / "unikraft/bin/kernel")]
        assert p.kernel.boot_protocol == "pvh"

    def test_annotations(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"annotations": {"org.unikraft.runu.accel": "tcg", "org.unikraft.runu.machine": "pc"},
                "process": {"args": []}}
        p = bundle.plan(spec, str(root), dict(environ, RUNU_ACCEL="kvm"))
        assert (p.accel, p.machine) == ("tcg", "pc")
        assert "-append" not in p.args

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
        monkeypatch.setattr(qemu, "SYSTEM_DIRS", ())
        with pytest.raises(ConfigError, match="qemu-system-aarch64 is needed.*qemu-system-arm"):
            bundle.plan({"process": {"args": []}}, str(root), environ)


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
    assert os.path.dirname(p.args[0]) in qemu.SYSTEM_DIRS
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
    assert uk_argnparse(cmdline[len("cmdline: "):]) == args[2:]
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
