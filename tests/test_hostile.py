"""Hostile bundles, corrupt state and careless callers (issue 12): each input gets a one-line error naming it,
exit status 1, and leaves nothing behind (state, process, cgroup, socket); what runu checks is what runs."""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

from conftest import needs_root, vmm_of
from harness.fs import cgroups_below, remove_cgroups
from harness.runu import BACKENDS, Runtime, assert_error, log_lines, spec, wait_for, write_bundle

from harness.images import KEEP, unikernel_bundle
from guest.build import build_tiny

pytestmark = [needs_root, pytest.mark.integration]

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86 is not installed")
GREETING = "Hello from the runu test kernel"
TCG = {"org.unikraft.runu.accel": "tcg"}


@pytest.fixture
def rt(tmp_path):
    # Plain bundles exercise the library's own mechanisms (hooks, cgroups, state) cheaply: runu itself hands
    # them to its delegate, so these tests drive runu without one. Unikernel bundles behave the same in both.
    r = Runtime("runu-library", str(tmp_path))
    yield r
    r.cleanup()


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels")
    return {fmt: build_tiny(str(out), fmt) for fmt in ("pvh", "multiboot")}


def unikernel(path, kernel, args=("idle",), initrd=None, annotations=None, resources=KEEP) -> str:
    return unikernel_bundle(path, kernel, args, initrd=initrd, annotations=dict(TCG, **(annotations or {})),
                                    resources=resources)


def nothing_left(rt: Runtime, cid: str, ignore=()) -> None:
    """No state, no process (but those in `ignore`), no default cgroup of `cid`."""
    assert cid not in rt.ids()
    assert [p for p in rt.new_processes() if p not in ignore] == []
    left = glob.glob("/sys/fs/cgroup/runu/*/") + glob.glob("/sys/fs/cgroup/*/runu/*/")
    assert not [d for d in left if os.path.basename(d.rstrip("/")).startswith(cid + "-")], left


def vmm_output(rt: Runtime, cid: str, bundle: str) -> str:
    with open(os.path.join(bundle, "out"), "wb") as out:
        r = subprocess.run([rt.binary, *rt.global_flags(), "run", "--bundle", bundle, cid], stdout=out,
                           stderr=subprocess.STDOUT, timeout=60)
    with open(os.path.join(bundle, "out"), errors="replace") as f:
        return f"rc={r.returncode}\n" + f.read()


# ---- reaching outside the bundle -------------------------------------------------------------

@needs_qemu
@pytest.mark.parametrize("vmm", BACKENDS)
@pytest.mark.parametrize("swap", ["symlink", "file", "rootfs"])
def test_vmm_boots_the_kernel_checked_at_create(tmp_path, rt, kernels, swap, vmm):
    """A kernel swapped between create and start (for a symlink to a host file, another file, or the whole
    rootfs for one pointing elsewhere) changes nothing: the VMM opens the very file create checked."""
    b = unikernel(tmp_path / "b", kernels["pvh"], args=["exit=3"],
                  annotations={"org.unikraft.runu.vmm": vmm, "org.unikraft.runu.accel": "auto"})
    out = tmp_path / "console"
    with open(out, "wb") as f:  # the VMM's console: the container's stdout, inherited from create
        subprocess.run([rt.binary, *rt.global_flags(), "create", "--bundle", b, "swap"], stdout=f, check=True,
                       timeout=30)
    kpath = os.path.join(b, "rootfs/unikraft/bin/kernel")
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"not a kernel at all" * 100)
    if swap == "symlink":
        os.rename(kpath, kpath + ".old")
        os.symlink(str(decoy), kpath)
    elif swap == "file":
        os.unlink(kpath)
        shutil.copy(str(decoy), kpath)
    else:
        other = tmp_path / "other" / "unikraft" / "bin"
        other.mkdir(parents=True)
        shutil.copy(str(decoy), other / "kernel")
        os.rename(os.path.join(b, "rootfs"), os.path.join(b, "rootfs.old"))
        os.symlink(str(tmp_path / "other"), os.path.join(b, "rootfs"))
    rt.ok("start", "swap")
    wait_for(lambda: rt.status("swap") == "stopped", "the guest to exit", timeout=60)
    assert GREETING in out.read_text(errors="replace"), out.read_text(errors="replace")
    rt.ok("delete", "swap")
    nothing_left(rt, "swap")


@needs_qemu
def test_vmm_argv_names_inherited_fds_not_bundle_paths(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["multiboot"], initrd=b"initrd-bytes")
    rt.create("fds", b)
    rt.ok("start", "fds")
    vmm = vmm_of(rt.state("fds")["pid"])  # the container's process supervises its VMM
    wait_for(lambda: open(f"/proc/{vmm}/comm").read().startswith("qemu"), "the VMM", timeout=10)
    with open(f"/proc/{vmm}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    kernel = argv[argv.index(b"-kernel") + 1].decode()
    initrd = argv[argv.index(b"-initrd") + 1].decode()
    assert kernel.startswith("/proc/self/fd/") and initrd.startswith("/proc/self/fd/"), argv
    for arg, name in ((kernel, "kernel"), (initrd, "initrd")):
        target = os.readlink(f"/proc/{vmm}/fd/{arg.rsplit('/', 1)[1]}")
        assert target == os.path.join(b, "rootfs/unikraft/bin", name)
    rt.ok("delete", "--force", "fds")
    nothing_left(rt, "fds")


@needs_qemu
@pytest.mark.parametrize("name", ["with space", "with,comma", "both ,x=y"])
def test_bundle_path_with_qemu_syntax_boots(tmp_path, rt, kernels, name):
    """A bundle (and so the initrd of a multiboot kernel, a QEMU module list) under a path with a blank or a
    comma boots: no path of the bundle is parsed as QEMU syntax."""
    b = unikernel(tmp_path / name, kernels["multiboot"], args=["exit=2"], initrd=b"initrd-bytes")
    out = vmm_output(rt, "qsyntax", b)
    assert GREETING in out, out
    assert out.startswith("rc=5\n"), out  # (2 << 1) | 1
    nothing_left(rt, "qsyntax")


@needs_qemu
def test_initrd_swapped_for_a_fifo_does_not_hang(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["multiboot"], args=["exit=1"], initrd=b"initrd-bytes")
    rt.create("fifo", b)
    ipath = os.path.join(b, "rootfs/unikraft/bin/initrd")
    os.unlink(ipath)
    os.mkfifo(ipath)
    rt.ok("start", "fifo", timeout=20)
    wait_for(lambda: rt.status("fifo") == "stopped", "the guest to exit", timeout=60)
    rt.ok("delete", "fifo")
    nothing_left(rt, "fifo")


def test_initrd_that_is_a_fifo_is_refused_at_create(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["multiboot"])
    os.mkfifo(os.path.join(b, "rootfs/unikraft/bin/initrd"))
    res = rt("create", "--bundle", b, "fifo", timeout=20)
    assert_error(rt, res, ["initrd", "not a regular file"])
    nothing_left(rt, "fifo")


def sandbox(path, args=None, **linux) -> str:
    cfg = spec(args)
    cfg["linux"].update(linux)
    return write_bundle(str(path), cfg)


def test_relative_hook_path_is_refused(tmp_path, rt):
    """The spec says a hook's path MUST be absolute: a relative one would run from wherever the hook starts
    (createContainer: the image's rootfs), a file of the image as host root."""
    cfg = spec(hooks={"createContainer": [{"path": "bin/busybox", "args": ["busybox", "true"]}]})
    b = write_bundle(str(tmp_path / "b"), cfg)
    assert_error(rt, rt("create", "--bundle", b, "hook"), ["createContainer", "bin/busybox", "absolute"])
    nothing_left(rt, "hook")


@pytest.mark.parametrize("timeout", ["1e400", str(10 ** 400), "0.5"])
def test_absurd_hook_timeout_is_one_line(tmp_path, rt, timeout):
    cfg = json.dumps(spec(hooks={"prestart": [{"path": "/bin/true", "timeout": 1}]}))
    b = write_bundle(str(tmp_path / "b"), cfg.replace('"timeout": 1', f'"timeout": {timeout}'))
    assert_error(rt, rt("create", "--bundle", b, "hook"), ["prestart", "/bin/true", "timeout"])
    nothing_left(rt, "hook")


def test_unknown_namespace_type_is_refused(tmp_path, rt):
    b = sandbox(tmp_path / "b", namespaces=[{"type": "network"}, {"type": "bogus"}])
    assert_error(rt, rt("create", "--bundle", b, "ns"), ["bogus", "namespace"])
    nothing_left(rt, "ns")


# ---- other containers and the host's cgroups -----------------------------------------------------

def test_same_id_in_two_roots_shares_nothing(tmp_path, rt):
    """Deleting root A's stopped `x` leaves root B's running `x` (and its cgroup) alone."""
    other = Runtime("runu-library", str(tmp_path / "B"))
    try:
        pa = rt.create("x", sandbox(tmp_path / "a"))
        pb = other.create("x", sandbox(tmp_path / "b"))
        os.kill(pa, 9)
        wait_for(lambda: rt.status("x") == "stopped", "A's x to stop", timeout=10)
        rt.ok("delete", "x")
        assert other.status("x") == "created"
        os.kill(pb, 0)
        with open(f"/proc/{pb}/cgroup") as f:
            cg = f.read()
        assert "/runu/x-" in cg, cg  # a cgroup of its own, named after its root too
        other.ok("delete", "--force", "x")
    finally:
        other.cleanup()
    nothing_left(rt, "x")


def _v2() -> str | None:
    return "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else None


def pids_cgroup(pid: int) -> str:
    """The directory of `pid`'s cgroup in the hierarchy holding the pids controller (v1), or in cgroup v2."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if _v2() and controllers == "":
                return "/sys/fs/cgroup" + path
            if "pids" in controllers.split(","):
                return "/sys/fs/cgroup/pids" + path
    raise AssertionError(f"process {pid} has no pids cgroup")


@pytest.fixture
def foreign_cgroup():
    """A cgroup of someone else's (`/mt-foreign-N/leaf`) holding a sleeping process.

    Afterwards `/mt-foreign-N` goes from every hierarchy, with any process left in it, even when the test
    fails: a runtime that takes the cgroup for its own (crun, runu's delegate, joins it, making the path
    in every hierarchy, and its delete leaves `/mt-foreign-N` there) must not leave it behind either."""
    base = _v2() or "/sys/fs/cgroup/pids"
    name = f"mt-foreign-{os.getpid()}"
    leaf = os.path.join(base, name, "leaf")
    os.makedirs(leaf)
    p = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        yield "/" + name, p
    finally:
        p.kill()
        p.wait()
        left = remove_cgroups(name, kill=True)
        assert not left, f"cgroups still in use: {left}"


@pytest.mark.parametrize("where", ["ancestor", "busy"])
def test_cgroups_path_over_someone_elses_cgroup_is_refused(tmp_path, rt, foreign_cgroup, where):
    top, p = foreign_cgroup
    path = top if where == "ancestor" else top + "/leaf"
    b = sandbox(tmp_path / "b", cgroupsPath=path, resources={"pids": {"limit": 1}})
    base = _v2() or "/sys/fs/cgroup/pids"
    with open(os.path.join(base, top.lstrip("/"), "pids.max")) as f:
        before = f.read()
    res = rt("create", "--bundle", b, "cg")
    assert_error(rt, res, ["cgroup", "belongs to something else"])
    with open(os.path.join(base, top.lstrip("/"), "pids.max")) as f:
        assert f.read() == before  # no limit landed on it
    assert p.poll() is None and os.path.isdir(os.path.join(base, top.lstrip("/"), "leaf"))
    theirs = os.path.join(base, top.lstrip("/"))
    assert cgroups_below(top) == [theirs, theirs + "/leaf"]  # nothing made in any other hierarchy either
    nothing_left(rt, "cg", ignore=[p.pid])


# ---- the control sockets and the state root --------------------------------------------------------

def _connect_as_nobody(path: str) -> str:
    """Try to connect to the unix socket `path` from a child that dropped to user nobody: what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            import socket

            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                msg = b"connected"
            except OSError as e:
                msg = (e.strerror or str(e)).encode()
            os.write(w, msg)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        return f.read().decode()


@needs_qemu
def test_state_root_and_control_socket_are_root_only(tmp_path, rt, kernels):
    """With umask 000 and a state root that already existed with mode 0777, nothing runu makes is reachable
    by another user: the root is made 0700, so the VMM's QMP socket cannot be connected to."""
    os.makedirs(rt.root, mode=0o777)
    os.chmod(rt.root, 0o777)
    b = unikernel(tmp_path / "b", kernels["pvh"])
    subprocess.run([rt.binary, *rt.global_flags(), "create", "--bundle", b, "sock"], check=True, umask=0,
                   stdout=subprocess.DEVNULL, timeout=30)
    subprocess.run([rt.binary, *rt.global_flags(), "start", "sock"], check=True, umask=0, timeout=30)
    sock = os.path.join(rt.root, "sock", "qmp.sock")
    wait_for(lambda: os.path.exists(sock), "the QMP socket", timeout=10)
    assert stat.S_IMODE(os.stat(rt.root).st_mode) == 0o700
    assert _connect_as_nobody(sock) == "Permission denied"
    for dirpath, dirs, files in os.walk(rt.root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            assert st.st_uid == 0
    rt.ok("delete", "--force", "sock")
    nothing_left(rt, "sock")


def test_state_root_of_another_user_is_refused(tmp_path, rt):
    os.makedirs(rt.root)
    os.chown(rt.root, 65534, 65534)
    assert_error(rt, rt("create", "--bundle", sandbox(tmp_path / "b"), "own"), ["state root", "belongs to user"])
    assert os.listdir(rt.root) == []


# ---- bounded inputs ------------------------------------------------------------------------------------

@needs_qemu
def test_huge_cpu_list_is_counted_not_expanded(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["pvh"], resources={"cpu": {"cpus": "0-2000000000"}})
    t = time.monotonic()
    assert_error(rt, rt("create", "--bundle", b, "cpus", timeout=20), ["linux.resources.cpu.cpus", "2000000000"])
    assert time.monotonic() - t < 5
    nothing_left(rt, "cpus")


def _plant(path: str, what: str | bytes) -> None:
    """Put at `path` a directory, a FIFO, a symlink to /dev/zero, or a file with the bytes `what`."""
    if what == "directory":
        os.mkdir(path)
    elif what == "fifo":
        os.mkfifo(path)
    elif what == "dev-zero":
        os.symlink("/dev/zero", path)
    else:
        with open(path, "wb") as f:
            f.write(what if isinstance(what, bytes) else b"")


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "too-large"])
def test_config_json_that_is_no_regular_file_or_too_large(tmp_path, rt, kind):
    b = write_bundle(str(tmp_path / "b"), None)
    path = os.path.join(b, "config.json")
    _plant(path, b" " * (17 << 20) if kind == "too-large" else kind)
    words = {"dev-zero": "character device", "fifo": "FIFO", "directory": "directory",
             "too-large": "larger than"}[kind]
    assert_error(rt, rt("create", "--bundle", b, "cfg", timeout=20), ["config.json", words])
    nothing_left(rt, "cfg")


CORRUPT = {
    "empty-object": b"{}", "list": b"[]", "null": b"null", "wrong-types": b'{"id": "c", "init_process_pid": [1]}',
    "paths": b'{"id": "c", "cgroup_paths": {"": 5}}', "nesting": b"[" * 100000 + b"]" * 100000,
    "garbage": b"\x00\xffgarbage{", "empty": b"", "directory": "directory", "fifo": "fifo",
}


def _corrupt(state_file: str, kind: str) -> None:
    os.unlink(state_file)
    _plant(state_file, CORRUPT[kind])


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_corrupt_state_json(tmp_path, rt, kind):
    """`list` still lists every container (the broken one by its id), `state` says what is wrong in one line,
    and `delete --force` still stops the broken one's processes and removes its cgroup and directory."""
    pa = rt.create("good", sandbox(tmp_path / "a"))
    pc = rt.create("c", sandbox(tmp_path / "c"))
    cgroup = pids_cgroup(pc)
    _corrupt(os.path.join(rt.root, "c", "state.json"), kind)
    res = rt("list", "--format", "json", timeout=10)
    assert res.rc == 0, res
    listed = {c["id"]: c for c in res.json()}
    assert listed["good"]["status"] == "created" and listed["c"]["status"] == "unknown"
    table = rt("list", timeout=10)
    assert table.rc == 0 and "good" in table.out and "\nc " in table.out, table
    before = len(log_lines(rt.log))
    assert_error(rt, rt("state", "c", timeout=10), ["container 'c'", "state.json"], logged_before=before)
    rt.ok("delete", "--force", "c", timeout=20)
    wait_for(lambda: not os.path.exists(f"/proc/{pc}") or open(f"/proc/{pc}/stat").read().split()[2] == "Z",
             "the broken container's init to die", timeout=5)
    assert "c" not in rt.ids()
    assert not os.path.exists(cgroup)
    assert rt.status("good") == "created"
    os.kill(pa, 0)


def test_corrupt_state_and_record_still_found_through_default_cgroup(tmp_path, rt):
    pc = rt.create("c", sandbox(tmp_path / "c"))
    cgroup = pids_cgroup(pc)
    for name in ("state.json", "recovery.json"):
        _corrupt(os.path.join(rt.root, "c", name), "garbage")
    rt.ok("delete", "--force", "c", timeout=20)
    wait_for(lambda: not os.path.exists(f"/proc/{pc}") or open(f"/proc/{pc}/stat").read().split()[2] == "Z",
             "the broken container's init to die", timeout=5)
    assert not os.path.exists(cgroup)
    nothing_left(rt, "c")


def test_delete_without_force_of_a_corrupt_state_says_so(tmp_path, rt):
    pc = rt.create("c", sandbox(tmp_path / "c"))
    _corrupt(os.path.join(rt.root, "c", "state.json"), "null")
    assert_error(rt, rt("delete", "c"), ["state.json", "--force"])
    os.kill(pc, 0)  # left alone


def test_root_under_proc_is_one_line(tmp_path, rt):
    res = rt("create", "--bundle", sandbox(tmp_path / "b"), "x", flags=["--root", "/proc/x", "--log", rt.log,
                                                                          "--log-format", "json"], timeout=10)
    assert_error(rt, res, ["/proc/x"])


def test_empty_root_is_refused(tmp_path, rt):
    res = rt("create", "--bundle", sandbox(tmp_path / "b"), "x", flags=["--root", "", "--log", rt.log,
                                                                          "--log-format", "json"], cwd=str(tmp_path))
    assert_error(rt, res, ["--root"])
    assert sorted(os.listdir(tmp_path)) == ["b", "runtime-log.json"]


def test_log_that_is_a_fifo_does_not_hang(tmp_path, rt):
    fifo = str(tmp_path / "log")
    os.mkfifo(fifo)
    res = rt("state", "nope", log=fifo, timeout=10)
    assert res.rc == 1 and res.err.count("\n") == 1 and "nope" in res.err


@needs_qemu
def test_absurd_elf_program_header_offset(tmp_path, rt, kernels):
    with open(kernels["pvh"], "rb") as f:
        data = bytearray(f.read())
    data[32:40] = (1 << 63).to_bytes(8, "little")  # e_phoff
    b = unikernel(tmp_path / "b", bytes(data))
    assert_error(rt, rt("create", "--bundle", b, "elf"), ["unikraft/bin/kernel", "program headers"])
    nothing_left(rt, "elf")


@pytest.mark.parametrize("limit", [1 << 63, (1 << 64) + 1, 1 << 64])
@pytest.mark.parametrize("kind", ["sandbox", "unikernel"])
def test_memory_limit_beyond_the_kernel_is_refused(tmp_path, rt, kernels, limit, kind):
    if kind == "unikernel" and not QEMU:
        pytest.skip("qemu-system-x86 is not installed")
    res = {"memory": {"limit": limit}}
    b = (sandbox(tmp_path / "b", resources=res) if kind == "sandbox"
         else unikernel(tmp_path / "b", kernels["pvh"], resources=res))
    assert_error(rt, rt("create", "--bundle", b, "mem"), ["memory", "limit", str(limit)])
    nothing_left(rt, "mem")


@needs_qemu
def test_guest_larger_than_the_host_is_refused(tmp_path, rt, kernels):
    b = unikernel(tmp_path / "b", kernels["pvh"], resources={"memory": {"limit": 1 << 50}})
    assert_error(rt, rt("create", "--bundle", b, "mem"), ["memory limit", "more than this host"])
    nothing_left(rt, "mem")


@needs_qemu
@pytest.mark.parametrize("annotation,value,words", [
    ("org.unikraft.runu.qemu.extra-args", "-overcommit mem-lock=on", ["mem-lock=on", "not allowed"]),
    ("org.unikraft.runu.qemu.cpu", "help", ["help"]),
    ("org.unikraft.runu.qemu.cpu", "max,help", ["help"]),
    ("org.unikraft.runu.qemu.cpu", "?", ["not a CPU model"]),
])
def test_qemu_knobs_that_cannot_work_are_refused(tmp_path, rt, kernels, annotation, value, words):
    b = unikernel(tmp_path / "b", kernels["pvh"], annotations={annotation: value})
    assert_error(rt, rt("create", "--bundle", b, "knob"), words)
    nothing_left(rt, "knob")


@pytest.mark.parametrize("cid", [".x", "...", "-", "_ses"])
def test_every_valid_id_gets_a_keyring(tmp_path, rt, cid):
    rt.create(cid, sandbox(tmp_path / "b"))
    assert rt.status(cid) == "created"
    rt.ok("delete", "--force", cid)
    nothing_left(rt, cid)


# ---- output that can lie -------------------------------------------------------------------------------

def test_tables_escape_control_characters(tmp_path, rt):
    bundle = tmp_path / "b\nfake   1   running   /x"
    rt.create("esc", sandbox(bundle, args=["/bin/busybox", "sh", "-c", "sleep 30; true", "30\n\x1b[2Jspoof"]))
    rt.ok("start", "esc")
    out = rt.ok("list").out
    assert len(out.splitlines()) == 2 and "\x1b" not in out and "b\\nfake" in out, out
    wait_for(lambda: "spoof" in open(f"/proc/{rt.state('esc')['pid']}/cmdline").read(), "the exec", timeout=5)
    ps = rt.ok("ps", "esc").out
    pids = rt.ok("ps", "--format", "json", "esc").json()
    assert len(ps.splitlines()) == 1 + len(pids) and "\x1b" not in ps and "30\\n\\x1b[2Jspoof" in ps, ps
    rt.ok("delete", "--force", "esc")


def test_delete_force_is_never_stuck_on_a_sub_cgroup(tmp_path, rt):
    """A process moved into a cgroup below the container's is the container's (as with runc): delete --force
    stops it and removes both cgroups instead of failing on the busy sub-cgroup for ever."""
    pid = rt.create("sub", sandbox(tmp_path / "b"))
    leaf = pids_cgroup(pid)
    os.mkdir(os.path.join(leaf, "inner"))
    p = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(leaf, "inner", "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        rt.ok("delete", "--force", "sub", timeout=20)
        assert p.wait(timeout=5) == -9
        assert not os.path.exists(leaf)
    finally:
        p.kill()
        p.wait()
    nothing_left(rt, "sub")
