"""The tiny test guest kernel (tests/guest/tiny): build both flavours, boot them.

Every QEMU process is killed and reaped in a ``finally`` block.
"""

import importlib.util
import os
import select
import shutil
import signal
import struct
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
QEMU = shutil.which("qemu-system-x86_64")
GREETING = "Hello from the runu test kernel"
MICROVM = "microvm,x-option-roms=off,rtc=off"
BOOT_TIMEOUT = 30


def _load_build_module():
    # Load by path: a plain "import build" could pick up PyPA's "build" package.
    spec = importlib.util.spec_from_file_location(
        "runu_tests_guest_build", os.path.join(HERE, "guest", "build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


guest_build = _load_build_module()


def _missing_toolchain():
    return [t for t in ("gcc", "ld", "objcopy") if shutil.which(t) is None]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    missing = _missing_toolchain()
    if missing:
        pytest.skip("cannot build the test kernel: %s not installed (Debian: gcc binutils)"
                    % ", ".join(missing))
    outdir = str(tmp_path_factory.mktemp("tiny-kernel"))
    return {fmt: guest_build.build_tiny(outdir, fmt) for fmt in guest_build.FORMATS}


needs_qemu = pytest.mark.skipif(
    QEMU is None, reason="qemu-system-x86_64 not installed (Debian: qemu-system-x86)")


def _kvm_usable():
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def qemu_argv(kernel, append=None, machine=MICROVM, accel="tcg", debug_exit=True,
              extra=()):
    argv = [QEMU, "-M", machine, "-accel", accel, "-m", "64",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio", "-no-reboot"]
    if debug_exit:
        argv += ["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    argv += list(extra)
    argv += ["-kernel", kernel]
    if append is not None:
        # A PVH boot passes the line as is: argv[0] first, as runu writes it (multiboot: QEMU writes it).
        argv += ["-append", ("prog " + append) if "pvh" in os.path.basename(kernel) else append]
    return argv


def _kill(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def boot(kernel, append=None, timeout=BOOT_TIMEOUT, **kw):
    """Boot to completion; return (exit status, serial output, stderr)."""
    proc = subprocess.Popen(qemu_argv(kernel, append, **kw), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _kill(proc)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def guest_lines(out):
    """The kernel's lines: firmware (SeaBIOS on pc/q35) may precede the greeting
    on the same line, so start at the greeting."""
    assert GREETING in out, out
    return [ln for ln in out[out.index(GREETING):].split("\n") if not ln.startswith("uk: ")]


# ---------------------------------------------------------------------------
# The files themselves


def test_build_is_cached(kernels, tmp_path):
    path = guest_build.build_tiny(str(tmp_path), "pvh")
    before = os.stat(path).st_mtime_ns
    assert guest_build.build_tiny(str(tmp_path), "pvh") == path
    assert os.stat(path).st_mtime_ns == before
    # A source newer than the kernel triggers a rebuild.
    os.utime(path, ns=(0, 0))
    guest_build.build_tiny(str(tmp_path), "pvh")
    assert os.stat(path).st_mtime_ns > 0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tiny-")]


def test_bad_format_rejected(tmp_path):
    with pytest.raises(ValueError):
        guest_build.build_tiny(str(tmp_path), "bzimage")


def _read_phdrs(data):
    assert data[:4] == b"\x7fELF"
    if data[4] == 2:  # ELFCLASS64
        (_, machine, _, entry, phoff, _, _, _, phentsize, phnum) = struct.unpack_from(
            "<HHIQQQIHHH", data, 16)
        fmt = "<IIQQQQQQ"  # type, flags, offset, vaddr, paddr, filesz, memsz, align
        phdrs = []
        for i in range(phnum):
            p_type, _, off, _, paddr, filesz, _, align = struct.unpack_from(
                fmt, data, phoff + i * phentsize)
            phdrs.append((p_type, off, paddr, filesz, align))
    else:
        (_, machine, _, entry, phoff, _, _, _, phentsize, phnum) = struct.unpack_from(
            "<HHIIIIIHHH", data, 16)
        fmt = "<IIIIIIII"  # type, offset, vaddr, paddr, filesz, memsz, flags, align
        phdrs = []
        for i in range(phnum):
            p_type, off, _, paddr, filesz, _, _, align = struct.unpack_from(
                fmt, data, phoff + i * phentsize)
            phdrs.append((p_type, off, paddr, filesz, align))
    return data[4], machine, entry, phdrs


def test_pvh_kernel_is_elf64_with_xen_note(kernels):
    with open(kernels["pvh"], "rb") as f:
        data = f.read()
    assert len(data) < 16 * 1024
    elf_class, machine, entry, phdrs = _read_phdrs(data)
    assert elf_class == 2 and machine == 62  # ELFCLASS64, EM_X86_64
    notes = [p for p in phdrs if p[0] == 4]  # PT_NOTE
    assert len(notes) == 1
    _, off, _, size, align = notes[0]
    assert align == 4  # QEMU and Firecracker align the note name by p_align
    namesz, descsz, n_type = struct.unpack_from("<III", data, off)
    assert (namesz, n_type) == (4, 18)  # XEN_ELFNOTE_PHYS32_ENTRY
    assert data[off + 12:off + 16] == b"Xen\0"
    assert descsz in (4, 8)
    assert struct.unpack_from("<I", data, off + 16)[0] == entry
    assert 12 + 4 + descsz <= size
    # No multiboot header: QEMU tries multiboot first and refuses ELF64 ones.
    assert struct.pack("<I", 0x1BADB002) not in data[:8192]


def test_multiboot_kernel_is_elf32_with_header(kernels):
    with open(kernels["multiboot"], "rb") as f:
        data = f.read()
    assert len(data) < 16 * 1024
    elf_class, machine, _, _ = _read_phdrs(data)
    assert elf_class == 1 and machine == 3  # ELFCLASS32, EM_386
    magic = struct.pack("<I", 0x1BADB002)
    off = data.index(magic)
    assert off < 8192 and off % 4 == 0
    m, flags, checksum = struct.unpack_from("<III", data, off)
    assert (m + flags + checksum) & 0xFFFFFFFF == 0


# ---------------------------------------------------------------------------
# Booting


BOOTS = [
    ("pvh", MICROVM),
    ("pvh", "pc"),
    ("multiboot", MICROVM),
    ("multiboot", "pc"),
]


@needs_qemu
@pytest.mark.parametrize("fmt,machine", BOOTS)
def test_exit_code_and_args(kernels, fmt, machine):
    status, out, err = boot(kernels[fmt], "exit=3 -- a b", machine=machine)
    lines = guest_lines(out)
    assert lines[0] == GREETING
    assert lines[1].startswith("cmdline: ")
    # Multiboot (QEMU) puts the kernel's path before the command line.
    assert lines[1].endswith("exit=3 -- a b")
    assert lines[2:5] == ["arg: a", "arg: b", "bye 3"]
    assert status == (3 << 1) | 1, (out, err)


@needs_qemu
def test_pvh_cmdline_is_exact(kernels):
    status, out, _ = boot(kernels["pvh"], "exit=9 foo=bar  --  x  y=1 --z")
    assert guest_lines(out)[:6] == [
        GREETING, "cmdline: prog exit=9 foo=bar  --  x  y=1 --z",
        "arg: x", "arg: y=1", "arg: --z", "bye 9"]
    assert status == 19


@needs_qemu
@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_default_is_exit_zero(kernels, fmt):
    status, out, _ = boot(kernels[fmt], None)
    lines = guest_lines(out)
    assert lines[1].startswith("cmdline:")
    assert "bye 0" in lines and not [ln for ln in lines if ln.startswith("arg:")]
    assert status == 1  # (0 << 1) | 1


@needs_qemu
@pytest.mark.parametrize("fmt,machine,extra", [
    ("pvh", MICROVM, ()),                       # no i8042: triple fault
    ("pvh", MICROVM, ("-device", "i8042")),     # i8042 reset
    ("multiboot", "pc", ()),                    # i8042 reset
])
def test_reset_exits_zero_with_no_reboot(kernels, fmt, machine, extra):
    status, out, _ = boot(kernels[fmt], "reset", machine=machine, extra=extra)
    assert "bye reset" in guest_lines(out)
    assert status == 0


@needs_qemu
@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_exit_without_debug_exit_device_falls_back_to_reset(kernels, fmt):
    status, out, _ = boot(kernels[fmt], "exit=5", debug_exit=False)
    assert "bye 5" in guest_lines(out)
    assert status == 0


@needs_qemu
@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_idle_runs_until_killed(kernels, fmt):
    proc = subprocess.Popen(qemu_argv(kernels[fmt], "idle -- q"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out = b""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while b"idling\n" not in out:
            left = deadline - time.monotonic()
            assert left > 0, out
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, "qemu closed its output early: %r" % out
                out += chunk
        assert guest_lines(out.decode())[2:4] == ["arg: q", "idling"]
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        _kill(proc)


@needs_qemu
@pytest.mark.skipif(not _kvm_usable(), reason="/dev/kvm not usable")
@pytest.mark.parametrize("fmt", ["pvh", "multiboot"])
def test_kvm_microvm(kernels, fmt):
    status, out, err = boot(kernels[fmt], "exit=4 -- k", accel="kvm")
    assert guest_lines(out)[2:4] == ["arg: k", "bye 4"], err
    assert status == 9


# ---------------------------------------------------------------------------
# Unikraft 0.16's conventions, end to end on QEMU: what runu writes (mocktainer.unikraft.cmdline), read by
# the tiny kernel the way Unikraft reads it, and Unikraft's exit through isa-debug-exit at 0x501.

UK_EXIT = ("-device", "isa-debug-exit,iobase=0x501,iosize=2")


def uk_lines(out):
    return [ln for ln in out[out.index(GREETING):].split("\n") if ln.startswith(("uk: ", "arg: ", "bye "))]


@needs_qemu
@pytest.mark.parametrize("fmt,machine", [("pvh", MICROVM), ("multiboot", "pc")])
@pytest.mark.parametrize("mode,status,code", [("halt", 83, 0), ("crash", 85, 1)])
def test_unikraft_exit_through_0x501(kernels, fmt, machine, mode, status, code):
    from mocktainer.unikraft import qemu

    got, out, err = boot(kernels[fmt], mode + " --", machine=machine, extra=UK_EXIT)
    assert "bye " + mode in guest_lines(out), out
    assert got == status, err
    # ... which the container reports as 0 for a clean halt, 1 and "the guest crashed" for a crash
    exit_code, message = qemu.exit_status(got << 8)
    assert exit_code == code and (message is None) == (code == 0)
    if code:
        assert "the guest crashed" in message


@needs_qemu
@pytest.mark.parametrize("fmt,machine", [("pvh", MICROVM), ("multiboot", "pc")])
@pytest.mark.parametrize("app", [[], ["a", "two words", "--", "x"]])
def test_runu_command_line_read_like_unikraft(kernels, fmt, machine, app):
    """What runu writes for an image with an initrd, 10 env vars and a user parameter reaches the guest
    as Unikraft 0.16 parses it: argv[0], the environment (8 kept), vfs.fstab, the application's args."""
    from mocktainer.unikraft import bundle

    env = ["V%d=value %d" % (i, i) for i in range(10)]
    program = None if fmt == "multiboot" else "/unikraft/bin/kernel"
    line = bundle.guest_cmdline(["/unikraft/bin/kernel", "halt", "netdev.ip=10.0.0.2/24", "--"] + app, env,
                                program, initrd=True)
    argv = qemu_argv(kernels[fmt], None, machine=machine, extra=UK_EXIT) + ["-append", line]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=BOOT_TIMEOUT)
    out = proc.stdout.decode(errors="replace")
    lines = uk_lines(out)
    argv0 = kernels[fmt] if fmt == "multiboot" else "/unikraft/bin/kernel"
    assert lines == (["uk: argv0=" + argv0, "uk: netdev.ip=10.0.0.2/24",
                      "uk: vfs.fstab=initrd0:/:extract::ramfs=1:"]
                     + ["uk: env V%d=value %d" % (i, i) for i in range(8)]
                     + ["arg: " + a for a in app] + ["bye halt"]), out
    assert proc.returncode == 83


@needs_qemu
def test_double_dash_right_after_argv0_is_an_argument(kernels):
    """Rule 2: `prog -- a` parses nothing and `--` stays in argv, so runu never writes that."""
    from mocktainer.unikraft import bundle

    _, out, _ = boot(kernels["pvh"], "-- a")
    assert uk_lines(out)[1:3] == ["arg: --", "arg: a"]
    line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "--", "a"], [], "/unikraft/bin/kernel")
    _, out, _ = boot(kernels["pvh"], line.split(" ", 1)[1])
    assert [ln for ln in uk_lines(out) if ln.startswith("arg:")] == ["arg: --", "arg: a"]


@needs_qemu
def test_microvm_nic_parameter_is_qemus(kernels):
    """The virtio_mmio.device runu writes before `--` for a NIC on microvm (ACPI off) is the one QEMU
    itself would append (after the `--`, where Unikraft would not see it)."""
    from mocktainer.unikraft import net, qemu

    base = ["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"]
    _, out, _ = boot(kernels["pvh"], "x --", machine=MICROVM + ",acpi=off", extra=base)
    assert "uk: argv0=prog" in out and ("arg: " + qemu.MICROVM_NIC_PARAM) in out, out
    line = net.guest_cmdline({"machine": "microvm", "line": {"program": "prog", "params": [], "args": ["a"]}},
                             ["netdev.ip=10.0.0.2/24"], "qemu")
    argv = qemu_argv(kernels["pvh"], None, extra=base + ["-machine", qemu.MICROVM_NO_ACPI]) + ["-append", line]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=BOOT_TIMEOUT).stdout.decode()
    assert uk_lines(out)[:4] == ["uk: argv0=prog", "uk: netdev.ip=10.0.0.2/24",
                                 "uk: " + qemu.MICROVM_NIC_PARAM, "arg: a"], out
