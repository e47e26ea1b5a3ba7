"""VMM backends end to end: QEMU and Firecracker boot the tiny test kernel through ``runu run``,
``runu create``/``start`` and containerd's ``ctr run``, sized from the OCI resources; what runu
refuses (bad knobs, a missing firecracker, too little memory, no KVM) is one line, exit status 1,
and leaves nothing behind. The Linux test guest boots under QEMU (TCG) when it is available.

The tiny kernel (tests/guest) prints a greeting, its command line and an ``arg: W`` line per word
after ``--``; ``exit=N`` ends it through QEMU's isa-debug-exit (the VMM's status is
``(N << 1) | 1``) or, under Firecracker, which has no such device, through an i8042 reset
(Firecracker then exits with 0); ``idle`` keeps it running.

Every runu here runs with ``RUNU_CONFIG=""`` (no config file) unless a test gives it one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import RUNU, base_env, needs_root, vmm_argv, vmm_of

from harness.containerd import Containerd, CtrIds, ctr_run, task_delete, task_kill, wait_task_status
from harness.images import build_image, import_image, unikernel_bundle, unikraft_rootfs
from harness.procs import become_subreaper, processes_mentioning, reap_zombies, require
from harness.wait import wait_for
from harness.runu import runu, BACKENDS, FIRECRACKER, needs_firecracker
from guest.build import build_tiny
from mocktainer.unikraft import host, qemu

HERE = Path(__file__).resolve().parent

GREETING = "Hello from the runu test kernel"
VMM = "org.unikraft.runu.vmm"
MIB = 1 << 20
HOST_CPUS = os.cpu_count() or 1

pytestmark = [needs_root, pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed")]
# What `exit=3` gives: QEMU's isa-debug-exit status, Firecracker's status after the i8042 reset.
EXIT3 = {"qemu": (3 << 1) | 1, "firecracker": 0}
OVERHEAD = {"qemu": 64 + 8, "firecracker": 16 + 8}  # the VMM and its supervisor


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return build_tiny(str(tmp_path_factory.mktemp("kernels")), "pvh")


def make_bundle(tmp_path: Path, kernel: str, args=(), annotations=None, resources=None, initrd=None,
                name="bundle") -> str:
    # mode words (idle, exit=N) stay the tiny kernel's: no environment after them
    return unikernel_bundle(tmp_path / name, kernel, args, initrd=initrd, annotations=annotations,
                                    resources=resources or {})


def create(root: str, bundle: str, cid: str, log: Path, env=None) -> int:
    """`runu create` with the container's stdio on a file (a pipe would keep a reader waiting)."""
    with open(log, "w") as out:
        r = subprocess.run([RUNU, "--root", root, "create", "--bundle", bundle, "--pid-file",
                            f"{bundle}/pid", cid], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                           timeout=30, env=env or base_env())
    assert r.returncode == 0, log.read_text()
    return int(Path(bundle, "pid").read_text())


def vmm_processes(marker: str, vmm_only: bool = False) -> list[int]:
    """Live processes (a runu init, a VMM; with `vmm_only` VMMs only) whose command line mentions
    `marker`."""
    return processes_mentioning(marker, names=["firecracker", "qemu-system"] if vmm_only else [])


def argv_of(pid: int) -> list[str]:
    """The VMM's command line for the container whose pid is `pid` (its supervisor)."""
    return vmm_argv(pid)


def option(argv: list[str], name: str) -> str:
    (value,) = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
    return value


def expected_vcpus(n: int) -> int:
    return max(1, min(n, HOST_CPUS))


# ---------------------------------------------------------------------------------------------
# runu run / create / start


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_boots_the_tiny_kernel(tmp_path, root, kernel, backend):
    b = make_bundle(tmp_path, kernel, args=["exit=3", "--", "hello", "world"], annotations={VMM: backend})
    r = runu(root, "run", "--bundle", b, f"run-{backend}")
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("uk: ")]
    # PVH and Firecracker pass the line as is: argv[0] is runu's to write
    assert lines[:2] == [GREETING, "cmdline: /unikraft/bin/kernel exit=3 -- hello world"], r.stdout + r.stderr
    assert "uk: argv0=/unikraft/bin/kernel" in r.stdout
    assert lines[2:4] == ["arg: hello", "arg: world"]
    assert r.returncode == EXIT3[backend], r
    assert r.stderr == ""  # nothing from the VMM itself (Firecracker logs errors only)
    assert os.listdir(root) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["halt", "crash"])
def test_unikraft_halt_and_crash(tmp_path, root, kernel, backend, mode):
    """The tiny kernel halting or crashing the way Unikraft does (41 or 42 to isa-debug-exit at 0x501, then
    an i8042 reset): QEMU ends with 83 or 85, which the supervisor's exit_status turns into the container's 0,
    or 1 and "the guest crashed" on its stderr;
    Firecracker, which has no such device, ends with 0 either way (the documented limit)."""
    from mocktainer.unikraft import firecracker, qemu

    b = make_bundle(tmp_path, kernel, args=[mode, "--"], annotations={VMM: backend})
    r = runu(root, "run", "--bundle", b, f"{mode}-{backend}")
    assert "bye " + mode in r.stdout, r
    if backend == "qemu":
        # QEMU ended with 83 or 85; the container's supervisor applies exit_status to it
        assert r.returncode == {"halt": 0, "crash": 1}[mode], r
        assert qemu.exit_status({"halt": 83, "crash": 85}[mode] << 8)[0] == r.returncode
        assert ("runu: the guest crashed" in r.stderr) == (mode == "crash"), r.stderr
    else:
        assert r.returncode == 0, r
        assert firecracker.exit_status(r.returncode << 8) == (0, None)


@needs_firecracker
def test_env_and_config_file_choose_the_backend(tmp_path, root, kernel):
    b = make_bundle(tmp_path, kernel, args=["exit=3"])
    assert runu(root, "run", "--bundle", b, "e1", env=base_env(RUNU_VMM="firecracker")).returncode == 0
    config = tmp_path / "config.toml"
    config.write_text(f'vmm = "firecracker"\nfirecracker_binary = "{FIRECRACKER}"\n')
    r = runu(root, "run", "--bundle", b, "e2", env=base_env(RUNU_CONFIG=str(config)))
    assert r.returncode == 0 and GREETING in r.stdout, r
    # precedence: annotation > environment > config file
    r = runu(root, "run", "--bundle", b, "e3", env=base_env(RUNU_CONFIG=str(config), RUNU_VMM="qemu"))
    assert r.returncode == EXIT3["qemu"], r
    b2 = make_bundle(tmp_path, kernel, args=["exit=3"], annotations={VMM: "firecracker"}, name="b2")
    assert runu(root, "run", "--bundle", b2, "e4", env=base_env(RUNU_VMM="qemu")).returncode == 0
    assert os.listdir(root) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cpu", [{"quota": 150000, "period": 100000}, {"cpus": "0"}])
def test_create_start_sizes_the_vm(tmp_path, root, kernel, backend, cpu):
    limit = 96 * MIB + 12345
    b = make_bundle(tmp_path, kernel, args=["idle"], annotations={VMM: backend},
                    resources={"memory": {"limit": limit}, "cpu": cpu})
    cid = f"size-{backend}"
    log = tmp_path / "console.log"
    pid = create(root, b, cid, log)
    state_dir = Path(root, cid)
    vcpus = expected_vcpus(2 if "quota" in cpu else 1)
    memory = 96 - OVERHEAD[backend]
    if backend == "firecracker":
        config_file = state_dir / "firecracker.json"
        assert config_file.stat().st_mode & 0o777 == 0o600
        config = json.loads(config_file.read_text())
        assert config == {
            # the checked kernel, handed over open (fd 3: the state directory, 4: the kernel)
            "boot-source": {"kernel_image_path": "/proc/self/fd/4",
                            "boot_args": "/unikraft/bin/kernel idle"},
            "machine-config": {"vcpu_count": vcpus, "mem_size_mib": memory},
            "drives": [],
        }
    else:
        # control: graceful stop; qmp.sock: the VMM is up (paused) already; recovery.json: what
        # delete --force finds when state.json is damaged
        assert sorted(os.listdir(state_dir)) == ["control", "exec.fifo", "qmp.sock", "recovery.json", "state.json"]
    assert runu(root, "start", cid).returncode == 0
    wait_for(lambda: "idling" in log.read_text(), "the guest to idle", timeout=20)
    argv = argv_of(pid)
    assert os.path.basename(argv[0]) == ("firecracker" if backend == "firecracker" else "qemu-system-x86_64")
    if backend == "firecracker":
        # configured through its API at create (firecracker.json is the record of what was sent)
        assert argv[1:] == ["--api-sock", "/proc/self/fd/3/firecracker.sock", "--level", "Error", "--id", cid]
    else:
        assert option(argv, "-m") == f"{memory}M" and option(argv, "-smp") == str(vcpus)
        assert option(argv, "-monitor") == "none" and option(argv, "-append") == "/unikraft/bin/kernel idle"
    assert json.loads(runu(root, "state", cid).stdout)["status"] == "running"
    # Whatever the backend, the VMM can never gain privileges through exec.
    vmm = vmm_of(pid)
    status = dict(line.split(":\t", 1) for line in open(f"/proc/{vmm}/status").read().splitlines() if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1"
    assert runu(root, "kill", cid, "KILL").returncode == 0
    wait_for(lambda: json.loads(runu(root, "state", cid).stdout)["status"] == "stopped", "the VM to stop", timeout=20)
    assert runu(root, "delete", cid).returncode == 0
    assert not state_dir.exists()  # firecracker.json went with it


def test_qemu_knobs_reach_the_command_line(tmp_path, root, kernel):
    b = make_bundle(tmp_path, kernel, args=["idle"], annotations={
        VMM: "qemu", "org.unikraft.runu.accel": "tcg", "org.unikraft.runu.qemu.cpu": "max,+pdpe1gb",
        "org.unikraft.runu.qemu.extra-args": '["-rtc", "base=utc,clock=vm", "-device", "i8042"]'})
    log = tmp_path / "console.log"
    pid = create(root, b, "knobs", log)
    assert runu(root, "start", "knobs").returncode == 0
    wait_for(lambda: "idling" in log.read_text(), "the guest to idle", timeout=20)
    argv = argv_of(pid)
    assert option(argv, "-cpu") == "max,+pdpe1gb" and option(argv, "-rtc") == "base=utc,clock=vm"
    assert option(argv, "-accel") == f"tcg,tb-size={qemu.TCG_TB_SIZE_MIB}"
    assert "i8042" in argv
    assert runu(root, "delete", "--force", "knobs").returncode == 0


# ---------------------------------------------------------------------------------------------
# refusals: one line, exit status 1, nothing left


def assert_refused(r: subprocess.CompletedProcess, root: str, cid: str, bundle: str, *words: str) -> None:
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert r.stdout == ""
    assert not os.path.exists(os.path.join(root, cid))
    assert vmm_processes(bundle) == []


@pytest.mark.parametrize("case", ["bad-vmm", "bad-extra-args", "bad-cpu", "memory-qemu", "memory-firecracker",
                                  "fc-missing-env", "fc-missing-config", "bad-config"])
def test_refusals_leave_nothing(tmp_path, root, kernel, case):
    annotations: dict[str, str] = {}
    resources: dict = {}
    env = base_env(RUNU_FIRECRACKER_BINARY=FIRECRACKER or "/usr/local/bin/firecracker")
    if case == "bad-vmm":
        annotations[VMM] = "hyperv"
        words = [f"annotation {VMM}='hyperv' is not a VMM runu knows: use qemu or firecracker"]
    elif case == "bad-extra-args":
        annotations["org.unikraft.runu.qemu.extra-args"] = "-rtc base=utc -monitor stdio"
        words = ["annotation org.unikraft.runu.qemu.extra-args: QEMU option '-monitor' is not allowed"]
    elif case == "bad-cpu":
        annotations["org.unikraft.runu.qemu.cpu"] = "max,file=/etc/shadow"
        words = ["annotation org.unikraft.runu.qemu.cpu='max,file=/etc/shadow' is not a CPU model"]
    elif case == "memory-qemu":
        resources = {"memory": {"limit": 64 * MIB}}
        words = ["memory limit of 67108864 bytes is too small for a qemu VM", "at least 8 MiB",
                 "at least 80 MiB (83886080 bytes)", "linux.resources.memory.limit"]
    elif case == "memory-firecracker":
        annotations[VMM] = "firecracker"
        resources = {"memory": {"limit": 20 * MIB}}
        words = ["too small for a firecracker VM", "at least 32 MiB (33554432 bytes)"]
    elif case == "fc-missing-env":
        annotations[VMM] = "firecracker"
        env = base_env(RUNU_FIRECRACKER_BINARY=str(tmp_path / "nowhere" / "firecracker"))
        words = ["environment variable RUNU_FIRECRACKER_BINARY names firecracker", "nowhere/firecracker",
                 "is not an executable file"]
    elif case == "fc-missing-config":
        annotations[VMM] = "firecracker"
        config = tmp_path / "config.toml"
        config.write_text(f'firecracker_binary = "{tmp_path}/nowhere/firecracker"\n')
        env = base_env(RUNU_CONFIG=str(config))
        words = [f"firecracker_binary in {config} names firecracker", "is not an executable file"]
    else:
        config = tmp_path / "config.toml"
        config.write_text('vmm = "qemu"\nqemu_extra_args = ["-qmp", "stdio"]\n')
        env = base_env(RUNU_CONFIG=str(config))
        words = [f"qemu_extra_args in {config}: QEMU option '-qmp' is not allowed"]
    b = make_bundle(tmp_path, kernel, args=["idle"], annotations=annotations, resources=resources)
    r = runu(root, "create", "--bundle", b, "refused", env=env)
    assert_refused(r, root, "refused", b, *words)
    r = runu(root, "run", "--bundle", b, "refused", env=env)
    assert_refused(r, root, "refused", b, *words)


def test_missing_firecracker_names_the_settings(tmp_path, root, kernel):
    """No firecracker anywhere (each one found is hidden under an empty, non-executable file in a
    private mount namespace): the message says where runu looked and which settings to use."""
    b = make_bundle(tmp_path, kernel, annotations={VMM: "firecracker"})
    empty = tmp_path / "empty"
    empty.write_text("")
    hide = " && ".join(f"mount --bind {empty} {d}/firecracker" for d in sorted(set(host.SYSTEM_DIRS))
                       if os.path.isfile(f"{d}/firecracker"))
    script = (hide or "true") + ' && exec "$@"'
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                        RUNU, "--root", root, "create", "--bundle", b, "nofc"],
                       capture_output=True, text=True, timeout=30, env=base_env(PATH="/usr/bin:/bin"))
    assert_refused(r, root, "nofc", b, "the firecracker VMM is needed but firecracker not found in PATH",
                   "scripts/setup-firecracker.sh", "firecracker_binary", "RUNU_FIRECRACKER_BINARY")


@pytest.mark.skipif(FIRECRACKER is None, reason="needs firecracker (bash scripts/setup-firecracker.sh)")
def test_firecracker_without_kvm_is_refused(tmp_path, root, kernel):
    """/dev/kvm hidden (bind-mounted /dev/null over it in a private mount namespace)."""
    b = make_bundle(tmp_path, kernel, annotations={VMM: "firecracker"})
    script = 'mount --bind /dev/null /dev/kvm && exec "$@"'
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                        RUNU, "--root", root, "create", "--bundle", b, "nokvm"],
                       capture_output=True, text=True, timeout=30, env=base_env())
    assert_refused(r, root, "nokvm", b, "the firecracker VMM needs KVM, but /dev/kvm is missing or not usable",
                   "org.unikraft.runu.vmm=qemu")


def test_firecracker_refuses_what_it_cannot_boot(tmp_path, root):
    multiboot = build_tiny(str(tmp_path / "k"), "multiboot")
    b = make_bundle(tmp_path, multiboot, annotations={VMM: "firecracker"})
    r = runu(root, "create", "--bundle", b, "mb", env=base_env(RUNU_FIRECRACKER_BINARY="/bin/true"))
    assert_refused(r, root, "mb", b, "firecracker boots only ELF64 kernels", "32-bit multiboot image")


def test_features_lists_the_backends_found(tmp_path):
    fake = tmp_path / "fc"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    r = subprocess.run([RUNU, "features"], capture_output=True, text=True, timeout=30,
                       env=base_env(RUNU_FIRECRACKER_BINARY=str(fake), RUNU_VMM="firecracker"))
    features = json.loads(r.stdout)
    ann = features["annotations"]
    assert all(isinstance(v, str) for v in ann.values())  # runtime-spec: a map of strings
    assert ann["org.unikraft.runu.vmm.available"].split(",") == ["qemu", "firecracker"]
    assert ann["org.unikraft.runu.vmm.default"] == "firecracker"
    assert VMM in ann and "org.unikraft.runu.qemu.extra-args" in ann
    r = subprocess.run([RUNU, "features"], capture_output=True, text=True, timeout=30,
                       env=base_env(RUNU_FIRECRACKER_BINARY=str(tmp_path / "absent")))
    assert json.loads(r.stdout)["annotations"]["org.unikraft.runu.vmm.available"] == "qemu"


# ---------------------------------------------------------------------------------------------
# containerd + ctr


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, kernel):
    require("containerd", "ctr", "containerd-shim-runc-v2", "umoci")
    become_subreaper()
    tmp = tmp_path_factory.mktemp("vmm-images")
    rootfs = unikraft_rootfs(tmp / "rootfs", kernel)
    ref = "localhost/runu-tests/vmm-tiny:latest"
    tar = build_image(rootfs, ref, entrypoint=["/unikraft/bin/kernel"], cmd=["exit=3", "--", "from-cmd"],
                              dest=tmp / "tiny.oci.tar")
    with Containerd(cri=False) as cd:
        cd.image = import_image(cd, tar, ref)
        yield cd
    reap_zombies()


@pytest.fixture
def ctr_ids(containerd):
    ids = CtrIds(containerd)
    yield ids
    ids.finish()


@pytest.mark.clients
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctr_run_boots_the_tiny_kernel(containerd, ctr_ids, backend):
    cid = ctr_ids(f"vmm-{backend}")
    res = ctr_run(containerd, containerd.image, cid, RUNU, annotations={VMM: backend}, timeout=30)
    lines = [ln for ln in res.stdout.replace("\r", "").split("\n") if ln and not ln.startswith("uk: ")]
    assert lines and lines[0] == GREETING, res
    assert lines[1].endswith(" exit=3 -- from-cmd") and "env.vars=PATH=" in lines[1], lines
    assert lines[1].startswith("cmdline: /unikraft/bin/kernel "), lines
    assert lines[2] == "arg: from-cmd"
    assert res.returncode == EXIT3[backend], res


@pytest.mark.clients
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctr_run_sizes_the_vm(containerd, ctr_ids, backend):
    """``ctr run --memory-limit --cpus``: the VMM's configuration (Firecracker's file in runu's state
    directory, QEMU's argv) has the guest memory (limit minus the VMM's headroom) and vCPUs."""
    cid = ctr_ids(f"vmm-size-{backend}")
    res = ctr_run(containerd, containerd.image, cid, RUNU, "idle", "--", detach=True,
                          annotations={VMM: backend}, extra=["--memory-limit", str(128 * MIB), "--cpus", "1.5"],
                          timeout=30)
    assert res.returncode == 0, res
    pid = wait_task_status(containerd, cid, "RUNNING", timeout=10)["pid"]
    wait_for(lambda: "idling" in containerd.task_log(cid), "the guest to idle", timeout=20)
    memory, vcpus = 128 - OVERHEAD[backend], expected_vcpus(2)
    argv = argv_of(pid)
    state_dir = containerd.runtime_root / containerd.namespace / cid
    if backend == "firecracker":
        assert argv[:3] == [FIRECRACKER, "--api-sock", "/proc/self/fd/3/firecracker.sock"]
        config = json.loads((state_dir / "firecracker.json").read_text())
        assert config["machine-config"] == {"vcpu_count": vcpus, "mem_size_mib": memory}
        assert config["boot-source"]["kernel_image_path"] == "/proc/self/fd/4"  # the checked kernel, kept open
        assert config["boot-source"]["boot_args"].endswith(" idle --")
    else:
        assert os.path.basename(argv[0]) == "qemu-system-x86_64"
        assert option(argv, "-m") == f"{memory}M" and option(argv, "-smp") == str(vcpus)
    task_kill(containerd, cid, "SIGKILL", check=True, timeout=30)
    wait_task_status(containerd, cid, "STOPPED", timeout=10)
    task_delete(containerd, cid, check=True, timeout=30)
    assert not state_dir.exists()


@pytest.mark.clients
@needs_firecracker
def test_ctr_run_tty_firecracker(containerd, ctr_ids):
    """``ctr run -t``: Firecracker's serial console is the pty (raw: ^C would go to the guest)."""
    cid = ctr_ids("vmm-tty")
    with ctr_run(containerd, containerd.image, cid, RUNU, "exit=3", "--", "on-a-tty", tty=True,
                         annotations={VMM: "firecracker"}) as term:
        term.read_until("bye", timeout=10)
        assert term.wait(timeout=10) == 0, term.text
    lines = [ln for ln in term.text.replace("\r", "").split("\n") if ln]
    assert lines[0] == GREETING and lines[-2:] == ["arg: on-a-tty", "bye 3"], term.text


@pytest.mark.clients
def test_ctr_bad_vmm_annotation(containerd, ctr_ids):
    cid = ctr_ids("vmm-bad")
    res = ctr_run(containerd, containerd.image, cid, RUNU, annotations={VMM: "hyperv"}, timeout=30)
    assert res.returncode != 0
    assert (f"OCI runtime create failed: annotation {VMM}='hyperv' is not a VMM runu knows: use qemu or "
            "firecracker") in res.stderr, res.stderr
    assert not (containerd.runtime_root / containerd.namespace / cid).exists()


# ---------------------------------------------------------------------------------------------
# the Linux test guest


def _linux_guest(outdir: str):
    try:
        from guest import linux  # tests/guest/linux.py: built by scripts/setup-linux-guest.sh's assets
    except ImportError:
        pytest.skip("tests/guest/linux.py is not there")
    try:
        return linux.build_linux_guest(outdir)
    except linux.GuestMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def linux_guest(tmp_path_factory):
    return _linux_guest(str(tmp_path_factory.mktemp("linux")))


def test_linux_guest_panic_fails_the_container(tmp_path, root, linux_guest):
    """A panicking Linux guest must not look like a clean power-off: pvpanic makes QEMU exit non-zero.
    (The clean boot through runu is tests/test_linux_guest.py's.)"""
    kernel, initrd = linux_guest
    b = make_bundle(tmp_path, kernel, args=["panic"], initrd=initrd, resources={"memory": {"limit": 320 * MIB}},
                    annotations={VMM: "qemu", "org.unikraft.runu.accel": "tcg"})
    r = runu(root, "run", "--bundle", b, "linux-panic", timeout=120)
    out = r.stdout.replace("\r", "")
    assert "runu-linux-guest: booted" in out, out[-3000:] + r.stderr
    assert r.returncode == 1, (r.returncode, out[-2000:])
    assert os.listdir(root) == []


def test_linux_guest_without_a_memory_limit_boots(tmp_path, root, linux_guest):
    """No limit: a Linux kernel gets DEFAULT_LINUX_MEMORY_MIB, not the 64 MiB in which it silently resets."""
    kernel, initrd = linux_guest
    b = make_bundle(tmp_path, kernel, initrd=initrd, annotations={VMM: "qemu", "org.unikraft.runu.accel": "tcg"})
    r = runu(root, "run", "--bundle", b, "linux-nolimit", timeout=120)
    out = r.stdout.replace("\r", "")
    assert "runu-linux-guest: powering off" in out, out[-3000:] + r.stderr
    assert r.returncode == 0


def test_linux_bzimage_is_refused_by_firecracker(tmp_path, root, linux_guest):
    kernel, initrd = linux_guest
    b = make_bundle(tmp_path, kernel, initrd=initrd, annotations={VMM: "firecracker"})
    r = runu(root, "create", "--bundle", b, "linux-fc", env=base_env(RUNU_FIRECRACKER_BINARY="/bin/true"))
    assert_refused(r, root, "linux-fc", b, "firecracker cannot boot", "a Linux bzImage",
                   "uncompressed ELF vmlinux")
