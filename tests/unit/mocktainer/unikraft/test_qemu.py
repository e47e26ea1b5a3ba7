"""mocktainer.unikraft.qemu: the accelerator, the QEMU command line and its knobs."""

import pytest

from harness.unikernels import fake_kernel, make_exe, opt
from mocktainer.error import ConfigError
from mocktainer.unikraft import firecracker, host, qemu
from runu import settings


class TestChooseAccel:
    K = fake_kernel()

    def choose(self, annotations=None, environ=None, kernel=None, kvm=True, hw=True):
        return qemu.choose_accel(annotations or {}, settings.Settings(environ=environ), kernel or self.K,
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
        with pytest.raises(ConfigError, match="Linux guests crash"):
            self.choose({qemu.ACCEL_ANNOTATION: "kvm"}, kernel=linux, kvm=True, hw=False)

    def test_auto_needs_hardware_virtualisation_for_unikernels_too(self):
        # real Unikraft builds stop with a KVM emulation failure on a KVM without vmx/svm: auto takes TCG there
        assert self.choose(kvm=True, hw=False) == "tcg"
        assert self.choose(kvm=True, hw=True) == "kvm"
        # ... while a unikernel the user forces onto it is the user's call (simple ones do run)
        assert self.choose({qemu.ACCEL_ANNOTATION: "kvm"}, kvm=True, hw=False) == "kvm"


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
