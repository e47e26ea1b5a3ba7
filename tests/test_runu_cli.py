"""Conformance of the `runu` binary to the OCI runtime spec (runtime.md: Lifecycle, Operations, Hooks).

Every call is a separate process with the flags containerd passes
(`--root R --log B/log.json --log-format json create --bundle B --pid-file B/init.pid ID`).
The bundles are plain (a busybox rootfs, no kernel). Each test runs against three
runtimes: `runu-library` (runu without a delegate: the library's own plain-process
path, process.args from the rootfs on the host; the tests' window on the library's
lifecycle, hooks and errors), `crun` (Debian's, the reference), and `runu+crun`
(the product: runu hands a plain bundle to its delegate OCI runtime, crun here, so
it must pass and fail exactly as crun does; crun's marks apply to it too). Where
crun departs from the spec (or from a policy runu shares with runc) the crun cases
are strict xfails whose reason says why, so a change in either runtime shows up
(one crun race is a non-strict xfail).
"""

import json
import os
import signal
import struct
import subprocess
import time

import pytest

from conftest import RUNU, needs_root
from harness.runu import (RFC3339, SANDBOX, Runtime, alive, assert_error, assert_failed, crun_unusable, log_lines,
                          schema_validator, spec, wait_exit, wait_for, write_bundle)

pytestmark = [needs_root, pytest.mark.integration]

CRUN_SKIP = crun_unusable()


def crun_marks(xfail: str | None = None, strict: bool = True):
    marks = [pytest.mark.skipif(bool(CRUN_SKIP), reason=CRUN_SKIP or "")]
    if xfail:
        marks.append(pytest.mark.xfail(strict=strict, reason=xfail))
    return marks


def crun(xfail: str | None = None, strict: bool = True):
    """crun, and runu handing the bundle to crun (which must behave as crun does)."""
    return [pytest.param(name, marks=crun_marks(xfail, strict)) for name in ("crun", "runu+crun")]


def cases(values, crun_xfail=None, runu_checks=()):
    """Parameters (rt, *value) for runu and crun; `crun_xfail` maps a value (its first item) to why crun fails it,
    which runu handing the bundle to crun fails too, unless the value is in `runu_checks` (runu refuses it before
    crun sees it)."""
    out = []
    for v in values:
        vals = v if isinstance(v, tuple) else (v,)
        out.append(pytest.param("runu-library", *vals))
        for name in ("crun", "runu+crun"):
            xfail = None if name == "runu+crun" and vals[0] in runu_checks else (crun_xfail or {}).get(vals[0])
            out.append(pytest.param(name, *vals, marks=crun_marks(xfail)))
    return out


def runtimes(crun_xfail: str | None = None):
    """Run the test against runu and crun (crun expected to fail for the given reason)."""
    return pytest.mark.parametrize("rt", ["runu-library", *crun(crun_xfail)], indirect=True)


def runu_only(reason: str):
    """Not applicable to crun; `reason` says why."""
    return pytest.mark.parametrize("rt", ["runu-library"], indirect=True)


@pytest.fixture(params=["runu-library", *crun()])
def rt(request, tmp_path):
    r = Runtime(request.param, str(tmp_path))
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def shared(tmp_path):
    """A directory the container and its hooks see at the same path under either runtime."""
    d = tmp_path / "shared"
    d.mkdir()
    return str(d)


@pytest.fixture
def mk(tmp_path, shared):
    """mk(name="bundle", config=None, **spec_kw): write a bundle; its absolute path."""

    def make(name="bundle", config=None, rootfs=True, **kw):
        return write_bundle(str(tmp_path / name), spec(shared=shared, **kw) if config is None else config,
                            rootfs=rootfs)

    return make


def started(rt, mk, cid="c1", **kw):
    """A running container; (bundle, pid)."""
    b = mk(**kw)
    pid = rt.create(cid, b)
    rt.ok("start", cid)
    return b, pid


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return None


def is_sleeping(pid):
    """The container's program (busybox sleep 30) has been executed."""
    c = cmdline(pid)
    return bool(c) and c[-2:] == [b"sleep", b"30"]


def stop(rt, cid, pid, sig="KILL"):
    rt.ok("kill", cid, sig)
    return wait_exit(pid)


def assert_nothing_left(rt):
    """No container directory under --root, no process started by the runtime still alive."""
    assert rt.ids() == []
    assert rt.new_processes() == []


# ---- lifecycle: create → created → start → running → kill → stopped → delete ---------------

def test_lifecycle(rt, mk):
    b = mk()
    pid = rt.create("c1", b)
    assert alive(pid)
    st = rt.state("c1")
    assert st["status"] == "created" and st["pid"] == pid
    assert not is_sleeping(pid), "the user program must not run before start"

    rt.ok("start", "c1")
    wait_for(lambda: is_sleeping(pid), what="the program to be executed")
    st = rt.state("c1")
    assert st["status"] == "running" and st["pid"] == pid

    status = stop(rt, "c1", pid, "TERM")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    st = rt.state("c1")
    assert st["status"] == "stopped"
    if rt.is_runu:
        assert st["pid"] == 0
    # crun keeps reporting the last pid of a stopped container; the spec only requires pid while created or running.

    rt.ok("delete", "c1")
    assert rt.ids() == []
    assert rt("state", "c1").rc == 1


def test_containerd_call_sequence(rt, mk):
    """The calls containerd's runc shim makes for `ctr run -d` + `ctr task kill` + `ctr task delete`."""
    b = mk()
    pid = rt.create("c1", b)
    rt.ok("start", "c1", log=os.path.join(b, "log.json"))
    assert rt.ok("ps", "--format", "json", "c1").json() == [pid]
    rt.ok("kill", "c1", "15")
    wait_exit(pid)
    rt.ok("kill", "--all", "c1", "9")
    rt.ok("delete", "c1")
    rt.ok("delete", "--force", "c1")
    assert_nothing_left(rt)
    assert log_lines(os.path.join(b, "log.json")) == []


def test_bundle_defaults_to_cwd(rt, mk):
    b = mk()
    rt.ok("create", "c1", cwd=b)
    assert rt.state("c1")["bundle"] == b


def test_state_fields(rt, mk):
    b = mk(annotations={**SANDBOX, "org.example.key": "value"})
    before = time.time()
    pid = rt.create("c1", b)
    st = rt.state("c1")
    assert st["id"] == "c1"
    assert st["status"] == "created"
    assert st["pid"] == pid
    assert st["bundle"] == b
    assert st["annotations"] == {**SANDBOX, "org.example.key": "value"}
    assert RFC3339.match(st["created"])
    created = time.mktime(time.strptime(st["created"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before - 2 <= created <= time.time() + 1
    if rt.is_runu:
        assert st["ociVersion"] == "1.0.2"  # the bundle's
        assert st["rootfs"] == os.path.join(b, "rootfs")  # absolute, like runc
    else:
        # crun reports the spec version it implements, and root.path as written in config.json.
        assert st["rootfs"] == "rootfs"


def test_state_matches_schema(rt, mk):
    v = schema_validator("state-schema.json")
    b = mk()
    pid = rt.create("c1", b)
    for _ in ("created", "running", "stopped"):
        st = rt.state("c1")
        errors = [e.message for e in v.iter_errors(st)]
        assert errors == [], (st, errors)
        if st["status"] == "created":
            rt.ok("start", "c1")
        elif st["status"] == "running":
            stop(rt, "c1", pid)
    assert st["status"] == "stopped"


def test_pid_file_written_atomically(rt, mk, tmp_path):
    """The pid file holds the pid and nothing else, replaces a stale one by rename, and no temp file is left."""
    b = mk()
    piddir = tmp_path / "pids"
    piddir.mkdir()
    pidfile = piddir / "init.pid"
    pidfile.write_text("99999999 stale and longer than a pid\n")
    old_inode = pidfile.stat().st_ino
    rt.ok("create", "--bundle", b, "--pid-file", str(pidfile), "c1")
    pid = rt.state("c1")["pid"]
    assert pidfile.read_text() == str(pid)
    assert os.listdir(piddir) == ["init.pid"]
    assert set(os.listdir(b)) - {"log.json"} == {"config.json", "rootfs"}
    if rt.is_runu:
        assert pidfile.stat().st_ino != old_inode, "rewritten in place rather than renamed over"


@runtimes(crun_xfail="crun 1.8.1 resolves a relative --pid-file against the bundle; runc (whose CLI runu follows) "
                     "against the caller's working directory; the runtime spec does not define --pid-file")
def test_relative_pid_file_is_relative_to_cwd(rt, mk, tmp_path):
    b = mk()
    rt.ok("create", "--bundle", b, "--pid-file", "rel.pid", "c1", cwd=str(tmp_path))
    assert (tmp_path / "rel.pid").read_text() == str(rt.state("c1")["pid"])


def test_start_is_refused_unless_created(rt, mk):
    b, pid = started(rt, mk)
    assert_failed(rt, rt("start", "c1"), ["running"])
    assert rt.status("c1") == "running" and alive(pid)
    stop(rt, "c1", pid)
    assert_failed(rt, rt("start", "c1"), ["stopped"], logged_before=1)
    assert rt.status("c1") == "stopped"


# ---- kill ---------------------------------------------------------------------------------

CRUN_SIGNAL_NAMES = ("crun 1.8.1 matches signal names case-sensitively, and for a name it does not know it sends "
                     "nothing and exits 0")


@pytest.mark.parametrize("rt, spelling, signo", cases(
    [("TERM", 15), ("SIGTERM", 15), ("sigusr1", 10), ("KILL", 9), ("15", 15), ("9", 9), (None, 15)],
    crun_xfail={"sigusr1": CRUN_SIGNAL_NAMES}), indirect=["rt"])
def test_kill_signal(rt, mk, spelling, signo):
    b, pid = started(rt, mk)
    wait_for(lambda: is_sleeping(pid), what="the program to be executed")
    rt.ok("kill", "c1", *([spelling] if spelling else []))
    status = wait_exit(pid, 3)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signo
    assert rt.status("c1") == "stopped"


def test_kill_created_container(rt, mk):
    b = mk()
    pid = rt.create("c1", b)
    rt.ok("kill", "c1", "KILL")
    wait_exit(pid)
    assert rt.status("c1") == "stopped"


@pytest.mark.parametrize("rt, sig", cases(["NOPE", "SIGFOO", "99", "65", "0", "RTMIN+99"], crun_xfail={
    "NOPE": CRUN_SIGNAL_NAMES, "SIGFOO": CRUN_SIGNAL_NAMES, "RTMIN+99": CRUN_SIGNAL_NAMES,
    "0": "crun 1.8.1 accepts signal 0 (kill(2)'s existence check); runu asks for a real signal (1-64)"}),
    indirect=["rt"])
def test_kill_unknown_signal(rt, mk, sig):
    b, pid = started(rt, mk)
    assert_failed(rt, rt("kill", "c1", sig), ["signal", sig])
    assert alive(pid) and rt.status("c1") == "running"


def test_kill_stopped_container_errors_but_kill_all_succeeds(rt, mk):
    b, pid = started(rt, mk)
    stop(rt, "c1", pid)
    # runtime.md, kill: "Attempting to send a signal to a container that is neither created nor running MUST
    # have no effect on the container and MUST generate an error."
    assert_failed(rt, rt("kill", "c1", "TERM"), ["not running"])
    # containerd sends `kill --all ID 9` after the process exited: it must succeed.
    rt.ok("kill", "--all", "c1", "9")
    rt.ok("kill", "-a", "c1", "KILL")
    assert rt.status("c1") == "stopped"


def test_kill_all_reaches_every_process(rt, mk, shared):
    b, pid = started(rt, mk, args=["/bin/busybox", "sh", "-c", "/bin/busybox sleep 31 & /bin/busybox sleep 32 & wait"])
    pids = wait_for(lambda: len(ps := rt.ok("ps", "--format", "json", "c1").json()) == 3 and ps, what="3 processes")
    assert pid in pids
    rt.ok("kill", "--all", "c1", "KILL")
    wait_exit(pid)
    for p in pids:
        wait_for(lambda p=p: not alive(p), what=f"{p} to die")


# ---- delete ---------------------------------------------------------------------------------

CRUN_DELETES_CREATED = ("crun 1.8.1 deletes a created container without --force (spec: 'Attempting to delete a "
                        "container that is not stopped MUST have no effect on the container and MUST generate an "
                        "error'); runu refuses like the spec and runc")


@pytest.mark.parametrize("rt, state", cases(["created", "running"], crun_xfail={"created": CRUN_DELETES_CREATED}),
                         indirect=["rt"])
def test_delete_without_force_is_refused(rt, mk, state):
    b = mk()
    pid = rt.create("c1", b)
    if state == "running":
        rt.ok("start", "c1")
    before = rt.state("c1")
    assert_failed(rt, rt("delete", "c1"), [state, "--force"])
    assert alive(pid)
    assert rt.state("c1") == before


@pytest.mark.parametrize("state", ["created", "running", "stopped"])
def test_delete_force(rt, mk, state):
    b = mk()
    pid = rt.create("c1", b)
    if state != "created":
        rt.ok("start", "c1")
    if state == "stopped":
        stop(rt, "c1", pid)
    rt.ok("delete", "--force", "c1")
    assert not alive(pid)
    wait_exit(pid)
    assert rt.ids() == []
    assert rt("state", "c1").rc == 1


def test_delete_unknown_id(rt):
    assert_failed(rt, rt("delete", "nope"), ["'nope'", "does not exist"])
    # like runc: a forced delete of a container that is already gone succeeds (containerd always sends one)
    rt.ok("delete", "--force", "nope")


# ---- hooks ----------------------------------------------------------------------------------

HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
# The state each hook gets on stdin (runtime.md, "State" and "Lifecycle"): the create-time hooks run while the
# container is being created, startContainer after create finished but before the program runs, poststart once
# it runs, poststop once it is gone.
HOOK_STATUS = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
               "startContainer": "created", "poststart": "running", "poststop": "stopped"}


def recording_hook(shared, name, exit_code=0):
    """A hook (the static busybox: it exists on the host and in the rootfs, as startContainer needs under crun)
    that appends its name to `order` and saves its stdin to `<name>.json`."""
    script = (f"echo {name} >> {shared}/order; /bin/busybox cat > {shared}/{name}.json; "
              f"echo {name}-says-no >&2; exit {exit_code}")
    return {"path": "/bin/busybox", "args": ["busybox", "sh", "-c", script]}


def hook_order(shared):
    try:
        with open(os.path.join(shared, "order")) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def hook_state(shared, name):
    with open(os.path.join(shared, f"{name}.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("rt", ["runu-library", *crun(
    "crun 1.8.1's `start` runs the poststart hooks as soon as it released the init, while the init may still run "
    "the startContainer hooks (a race, so not a strict xfail): Lifecycle steps 7-9 put startContainer, the program "
    "and poststart in this order; runu's `start` waits until the init has exec'd the program", strict=False)],
    indirect=True)
def test_hooks_order(rt, mk, shared):
    b = mk(hooks={name: [recording_hook(shared, name)] for name in HOOKS})
    pid = rt.create("c1", b)
    assert hook_order(shared) == ["prestart", "createRuntime", "createContainer"]
    rt.ok("start", "c1")
    assert hook_order(shared) == HOOKS[:5]
    assert is_sleeping(pid), "start returned before the program was executed"
    stop(rt, "c1", pid)
    assert hook_order(shared) == HOOKS[:5]
    rt.ok("delete", "c1")
    assert hook_order(shared) == HOOKS


@runtimes(crun_xfail="crun 1.8.1 passes status 'created' to prestart/createRuntime/createContainer hooks (create "
                     "has not finished: 'creating'), and to startContainer hooks status 'starting' (not a "
                     "runtime-spec status: the state schema fails it), bundle '/' (the path inside the container, "
                     "not the bundle's) and pid 0")
def test_hooks_get_the_state_on_stdin(rt, mk, shared):
    b = mk(hooks={name: [recording_hook(shared, name)] for name in HOOKS},
           annotations={**SANDBOX, "org.example.key": "v"})
    pid = rt.create("c1", b)
    rt.ok("start", "c1")
    wait_for(lambda: len(hook_order(shared)) == 5, what="the startContainer and poststart hooks")
    stop(rt, "c1", pid)
    rt.ok("delete", "c1")
    v = schema_validator("state-schema.json")
    problems = []
    for name in HOOKS:
        st = hook_state(shared, name)
        problems += [f"{name}: {e.message}" for e in v.iter_errors(st)]
        if st.get("status") != HOOK_STATUS[name]:
            problems.append(f"{name}: status {st.get('status')!r}, expected {HOOK_STATUS[name]!r}")
        if (st.get("id"), st.get("bundle")) != ("c1", b):
            problems.append(f"{name}: id/bundle {st.get('id')!r} {st.get('bundle')!r}")
        if st.get("annotations") != {**SANDBOX, "org.example.key": "v"}:
            problems.append(f"{name}: annotations {st.get('annotations')!r}")
        if name == "createContainer" and not rt.is_runu:
            # crun passes pid 0 to createContainer hooks: allowed, the state's pid is only REQUIRED when created
            # or running; runu (like runc) passes it to every hook that runs while the process exists.
            expected_pid = 0
        else:
            expected_pid = pid if name != "poststop" else st.get("pid")
        if st.get("pid") != expected_pid:
            problems.append(f"{name}: pid {st.get('pid')!r}, expected {expected_pid}")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("hook", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_fails_create_and_leaves_nothing(rt, mk, shared, hook):
    b = mk(hooks={hook: [recording_hook(shared, hook, exit_code=3)],
                  "poststop": [recording_hook(shared, "poststop")]})
    log = os.path.join(b, "log.json")
    res = rt("create", "--bundle", b, "--pid-file", os.path.join(b, "init.pid"), "c1", log=log)
    assert_failed(rt, res, [hook, "exit status 3", f"{hook}-says-no"], log=log)
    assert not os.path.exists(os.path.join(b, "init.pid"))
    assert_nothing_left(rt)
    assert hook_order(shared)[0] == hook


@pytest.mark.parametrize("rt, hook", cases(["prestart", "createRuntime", "createContainer"], crun_xfail=dict.fromkeys(
    ["prestart", "createRuntime", "createContainer"], "crun 1.8.1 does not run poststop hooks when create fails")),
    indirect=["rt"])
def test_failing_create_hook_still_runs_poststop(rt, mk, shared, hook):
    """Lifecycle steps 3-5: a failing prestart/createRuntime/createContainer hook → 'continue the lifecycle at
    step 12' (destroy), and step 13 runs the poststop hooks."""
    b = mk(hooks={hook: [recording_hook(shared, hook, exit_code=1)],
                  "poststop": [recording_hook(shared, "poststop")]})
    assert_failed(rt, rt("create", "--bundle", b, "c1"), [hook])
    assert hook_order(shared) == [hook, "poststop"]
    st = hook_state(shared, "poststop")
    assert st["status"] == "stopped" and st["id"] == "c1" and st["bundle"] == b
    assert_nothing_left(rt)


@pytest.mark.parametrize("case", ["timeout", "missing-path"])
def test_create_hook_timeout_or_missing_path_fails_create(rt, mk, case):
    hook = ({"path": "/bin/busybox", "args": ["busybox", "sleep", "20"], "timeout": 1} if case == "timeout"
            else {"path": "/no/such/hook"})
    b = mk(hooks={"createRuntime": [hook]})
    t = time.monotonic()
    res = rt("create", "--bundle", b, "c1")
    assert time.monotonic() - t < 10
    assert_failed(rt, res, ["createRuntime", "timeout" if case == "timeout" else "/no/such/hook"])
    assert_nothing_left(rt)


def test_failing_poststart_and_poststop_hooks_only_warn(rt, mk, shared):
    """runtime.md, Lifecycle steps 9 and 13: a failing poststart/poststop hook is a warning; 'the remaining hooks
    and lifecycle continue as if the hook had succeeded'."""
    b = mk(hooks={"poststart": [recording_hook(shared, "poststart", exit_code=1)],
                  "poststop": [recording_hook(shared, "poststop", exit_code=1)]})
    pid = rt.create("c1", b)
    rt.ok("start", "c1")
    assert rt.status("c1") == "running"
    stop(rt, "c1", pid)
    res = rt.ok("delete", "c1")
    assert rt.ids() == []
    assert hook_order(shared) == ["poststart", "poststop"]
    if rt.is_runu:
        # The warning reaches the user like an error does: stderr and the --log file.
        assert "runu: warning: poststop hook #0" in res.err
        warnings = [json.loads(line) for line in log_lines(rt.log) if '"warning"' in line]
        assert any(w["level"] == "warning" and w["msg"].startswith("poststart hook #0") for w in warnings)
        assert any(w["msg"].startswith("poststop hook #0") for w in warnings)


@pytest.mark.parametrize("rt", ["runu-library", *crun()], indirect=True)
def test_hooks_after_a_failing_poststart_or_poststop_hook_still_run(rt, mk, shared):
    b = mk(hooks={"poststart": [recording_hook(shared, "poststart", exit_code=1), recording_hook(shared, "ps2")],
                  "poststop": [recording_hook(shared, "poststop", exit_code=1), recording_hook(shared, "pp2")]})
    pid = rt.create("c1", b)
    rt.ok("start", "c1")
    stop(rt, "c1", pid)
    rt.ok("delete", "c1")
    assert hook_order(shared) == ["poststart", "ps2", "poststop", "pp2"]


def test_failing_start_container_hook_stops_the_container(rt, mk, shared):
    """startContainer fails → 'generate an error, stop the container' : the program never runs."""
    marker = os.path.join(shared, "program-ran")
    b = mk(args=["/bin/busybox", "sh", "-c", f"echo > {marker}; exec /bin/busybox sleep 30"],
           hooks={"startContainer": [recording_hook(shared, "startContainer", exit_code=1)]})
    pid = rt.create("c1", b)
    rt("start", "c1")
    wait_exit(pid)
    assert not os.path.exists(marker)
    assert rt.status("c1") == "stopped"


@pytest.mark.parametrize("rt", ["runu-library", *crun("crun 1.8.1: `start` exits 0 and runs poststart too")],
                         indirect=True)
def test_failing_start_container_hook_fails_start(rt, mk, shared):
    """Lifecycle step 7: 'If any startContainer hook fails, the runtime MUST generate an error, stop the container,
    and continue the lifecycle at step 12' (so no poststart, which is step 9)."""
    b = mk(hooks={"startContainer": [recording_hook(shared, "startContainer", exit_code=1)],
                  "poststart": [recording_hook(shared, "poststart")]})
    pid = rt.create("c1", b)
    res = rt("start", "c1")
    wait_exit(pid)
    assert hook_order(shared) == ["startContainer"]
    assert_failed(rt, res, ["startContainer", "startContainer-says-no"])


# ---- namespaces and config fields -----------------------------------------------------------

@pytest.mark.parametrize("what, words", [("uts-namespace", ["uts namespace", "not a network namespace"]),
                                         ("regular-file", ["not a namespace"]), ("missing", ["does not exist"])])
def test_network_namespace_path_of_the_wrong_kind(rt, mk, tmp_path, what, words):
    path = {"uts-namespace": "/proc/self/ns/uts", "regular-file": str(tmp_path / "afile"),
            "missing": str(tmp_path / "no-such-netns")}[what]
    (tmp_path / "afile").write_text("x")
    b = mk(namespaces=[{"type": "mount"}, {"type": "network", "path": path}])
    assert_failed(rt, rt("create", "--bundle", b, "c1"), ["network namespace", path] + words)
    assert_nothing_left(rt)


def test_network_namespace_joined_by_path(rt, mk, netns):
    name = netns()
    path = f"/var/run/netns/{name}"
    b = mk(namespaces=[{"type": "mount"}, {"type": "network", "path": path}])
    pid = rt.create("c1", b)
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(path).st_ino


def test_new_network_namespace_has_loopback_up(rt, mk):
    b = mk(args=["/bin/busybox", "ip", "-o", "link"])
    res = rt("run", "--bundle", b, "c1")
    assert res.rc == 0, res
    (line,) = res.out.splitlines()  # a new netns: only lo, and it is up
    assert ": lo: <LOOPBACK,UP," in line


NS_TYPES = ["pid", "mount", "ipc", "uts", "user", "cgroup", "network"]


def test_unsupported_namespaces_and_unknown_fields_are_ignored(rt, mk):
    config = spec(namespaces=[{"type": t} for t in NS_TYPES])
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    # config.md, "Extensibility": unknown properties MUST be ignored, not an error.
    config["org.example.future"] = {"x": [1, 2]}
    config["process"]["org.example.flag"] = True
    config["linux"]["org.example.thing"] = "y"
    config["root"]["org.example.extra"] = 1
    b = mk(config=config)
    pid = rt.create("c1", b)
    rt.ok("start", "c1")
    assert rt.status("c1") == "running"
    ours = {t: os.stat(f"/proc/self/ns/{f}").st_ino for t, f in
            [("pid", "pid"), ("mount", "mnt"), ("ipc", "ipc"), ("uts", "uts"), ("user", "user"), ("cgroup", "cgroup"),
             ("network", "net")]}
    theirs = {t: os.stat(f"/proc/{pid}/ns/{f}").st_ino for t, f in
              [("pid", "pid"), ("mount", "mnt"), ("ipc", "ipc"), ("uts", "uts"), ("user", "user"),
               ("cgroup", "cgroup"), ("network", "net")]}
    assert theirs["network"] != ours["network"]
    if rt.is_runu:
        # runu runs a VMM: only the network namespace is its business; the others are filtered out.
        assert all(theirs[t] == ours[t] for t in NS_TYPES if t != "network"), (ours, theirs)
    else:
        # crun honours all of them.
        assert all(theirs[t] != ours[t] for t in NS_TYPES), (ours, theirs)


CRUN_SEMVER = "crun 1.8.1 only checks the major version; config.md: ociVersion MUST be in SemVer v2.0.0 format"


@pytest.mark.parametrize("rt, version", cases(["banana", "", "2.0.0", "1.0", "01.0.0", "1.0.x", 1.0, None],
                                              crun_xfail={"1.0": CRUN_SEMVER, "01.0.0": CRUN_SEMVER,
                                                          "1.0.x": CRUN_SEMVER}), indirect=["rt"])
def test_invalid_oci_version_is_refused(rt, mk, version):
    config = spec()
    if version is None:
        del config["ociVersion"]
    else:
        config["ociVersion"] = version
    b = mk(config=config)
    assert_failed(rt, rt("create", "--bundle", b, "c1"), ["ociVersion"])
    assert_nothing_left(rt)


# ---- ps, list --------------------------------------------------------------------------------

def test_ps(rt, mk):
    b, pid = started(rt, mk, args=["/bin/busybox", "sh", "-c", "/bin/busybox sleep 31 & wait"])
    pids = wait_for(lambda: len(ps := rt.ok("ps", "--format", "json", "c1").json()) == 2 and ps, what="2 processes")
    assert all(isinstance(p, int) for p in pids) and pid in pids
    (child,) = set(pids) - {pid}
    assert cmdline(child)[-2:] == [b"sleep", b"31"]
    table = rt.ok("ps", "c1").out.splitlines()
    col = table[0].split().index("PID")
    assert {int(line.split()[col]) for line in table[1:]} >= {pid, child}


def test_list(rt, mk):
    assert rt.ok("list", "--format", "json").json() in ([], None)
    assert rt.ok("list", "-q").out == ""
    b1 = mk("b1")
    b2 = mk("b2")
    p1 = rt.create("c1", b1)
    rt.create("c2", b2)
    rt.ok("start", "c2")
    assert rt.ok("list", "-q").out.split() == ["c1", "c2"]
    assert rt.ok("list", "--quiet").out.split() == ["c1", "c2"]
    items = {i["id"]: i for i in rt.ok("list", "--format", "json").json()}
    assert set(items) == {"c1", "c2"}
    assert items["c1"]["status"] == "created" and items["c1"]["pid"] == p1 and items["c1"]["bundle"] == b1
    assert items["c2"]["status"] == "running"
    lines = rt.ok("list").out.splitlines()
    assert lines[0].split()[:3] in (["ID", "PID", "STATUS"], ["NAME", "PID", "STATUS"])
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["c1"][1:3] == [str(p1), "created"] and rows["c2"][2] == "running"


# ---- run, --preserve-fds -------------------------------------------------------------------

@pytest.mark.parametrize("script, code", [("echo out-line; exit 7", 7), ("echo out-line", 0),
                                          ("echo out-line; kill -9 $$", 137)])
def test_run_foreground_exit_status(rt, mk, script, code):
    b = mk(args=["/bin/busybox", "sh", "-c", script])
    res = rt("run", "--bundle", b, "c1")
    assert res.rc == code, res
    assert res.out == "out-line\n"
    assert rt.ids() == []  # removed after it exited
    assert rt.new_processes() == []


def test_run_detach(rt, mk):
    b = mk()
    t = time.monotonic()
    res = rt("run", "--detach", "--bundle", b, "--pid-file", os.path.join(b, "init.pid"), "c1")
    assert res.rc == 0, res
    assert time.monotonic() - t < 10
    with open(os.path.join(b, "init.pid")) as f:
        pid = int(f.read())
    st = rt.state("c1")
    assert st["status"] == "running" and st["pid"] == pid and alive(pid)


def test_run_forwards_signals_to_the_container(rt, mk, tmp_path):
    b = mk()
    with open(tmp_path / "run.out", "w") as out:
        p = subprocess.Popen([rt.binary] + rt.global_flags() + ["run", "--bundle", b, "c1"], stdin=subprocess.DEVNULL,
                             stdout=out, stderr=out)
    try:
        pid = wait_for(lambda: rt("state", "c1").rc == 0 and rt.state("c1")["pid"], what="the container")
        wait_for(lambda: is_sleeping(pid), what="the program to be executed")
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 128 + signal.SIGTERM, (tmp_path / "run.out").read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rt.ids() == []
    assert not alive(pid)


def test_run_with_an_existing_id_is_refused(rt, mk):
    pid = rt.create("c1", mk())
    before = rt.state("c1")
    other = mk("other", args=["/bin/busybox", "true"])
    assert_failed(rt, rt("run", "--bundle", other, "c1"), ["'c1'", "already exists"])
    assert rt.state("c1") == before and alive(pid)


def test_args0_is_looked_up_in_the_process_path(rt, mk):
    b, pid = started(rt, mk, args=["busybox", "sleep", "30"])
    wait_for(lambda: is_sleeping(pid), what="the program to be executed")


@pytest.mark.parametrize("n", [0, 1, 2])
def test_preserve_fds(rt, mk, shared, tmp_path, n):
    """fds 3 .. 3+N-1 reach the process; nothing else above stdio does (the runtime's own fds are closed)."""
    out = tmp_path / "fd3"
    out2 = tmp_path / "fd4"
    script = ("echo to-fd3 >&3 && echo fd3-ok; echo to-fd4 >&4 && echo fd4-ok; "
              "/bin/busybox ls /proc/self/fd | /bin/busybox sort -n | /bin/busybox tr '\\n' ' '")
    b = mk(args=["/bin/busybox", "sh", "-c", script])
    with open(out, "w") as f3, open(out2, "w") as f4, open(os.devnull) as extra:
        # fd 3, 4 = the files; a higher fd that must not leak into the container
        wrap = ["/bin/bash", "-c", f'exec "$@" 3>&{f3.fileno()} 4>&{f4.fileno()}', "sh"]
        res = rt("run", "--preserve-fds", str(n), "--bundle", b, "c1", wrap=wrap,
                 pass_fds=(f3.fileno(), f4.fileno(), extra.fileno()))
    assert res.rc == 0, res
    lines = res.out.splitlines()
    assert ("fd3-ok" in lines) == (n >= 1) and ("fd4-ok" in lines) == (n >= 2), res
    assert out.read_text() == ("to-fd3\n" if n >= 1 else "")
    assert out2.read_text() == ("to-fd4\n" if n >= 2 else "")
    fds = [int(x) for x in lines[-1].split()]
    # 0-2, the preserved ones, and the one ls opened for /proc/self/fd
    assert fds[:3 + n] == list(range(3 + n)) and len(fds) == 4 + n, lines


# ---- features, spec, unsupported commands -------------------------------------------------

@runu_only("crun 1.8.1 has no `features` command")
def test_features(rt):
    f = rt.ok("features", flags=[]).json()
    assert f["ociVersionMin"] == "1.0.0" and f["ociVersionMax"].startswith("1.")
    assert f["hooks"] == HOOKS
    assert "network" in f["linux"]["namespaces"]
    assert isinstance(f["annotations"], dict)


def test_spec_output_matches_config_schema(rt, tmp_path):
    d = tmp_path / "spec"
    d.mkdir()
    rt.ok("spec", "--bundle", str(d), flags=[])
    with open(d / "config.json") as f:
        config = json.load(f)
    errors = [e.message for e in schema_validator("config-schema.json").iter_errors(config)]
    assert errors == []
    if rt.is_runu:
        assert config["process"]["args"][0] == "/unikraft/bin/kernel"
        res = rt("spec", "--bundle", str(d))  # never overwrites
        assert_error(rt, res, ["config.json", "exists"])


@runu_only("crun implements exec, pause, resume and update")
@pytest.mark.parametrize("command", [["exec", "c1", "/bin/true"], ["exec", "--process", "p.json", "--detach", "c1"],
                                     ["pause", "c1"], ["resume", "c1"], ["update", "--memory", "1000000", "c1"],
                                     ["pause", "no-such-container"]])
def test_unsupported_commands(rt, mk, command):
    b, pid = started(rt, mk)
    res = rt(*command)
    assert_error(rt, res, [f"'{command[0]}'", "not supported"])
    assert rt.status("c1") == "running" and alive(pid)


# ---- error reporting ----------------------------------------------------------------------

def test_errors_are_appended_to_the_json_log(rt, tmp_path):
    assert_error(rt, rt("state", "nope1"), ["'nope1'", "does not exist"])
    assert_error(rt, rt("state", "nope2"), ["'nope2'", "does not exist"], logged_before=1)
    assert len(log_lines(rt.log)) == 2


@runu_only("crun prints its own messages; runu's format is the point here")
def test_error_without_log_flags(rt):
    res = rt("state", "nope", flags=["--root", rt.root])
    assert res.rc == 1 and res.err == "runu: container 'nope' does not exist\n"
    assert not os.path.exists(rt.log)


# ---- bad input: each a clear one-line error, exit 1, no state dir, no process -------------

CRUN_TRAVERSAL = ("crun 1.8.1 does not validate ids: `crun delete [--force] ../x` removes <root>/../x, and "
                  "`crun delete [--force] ..` the root's parent, recursively (create refuses them, by accident)")
CRUN_ANY_ID = "crun 1.8.1 accepts any id without a '/'; runu allows runc's set (letters, digits, _ + - .)"


@pytest.mark.parametrize("rt, cid", cases(["../x", "a/b", ".", "..", "", "a b", "x\ny", "x" * 300], crun_xfail={
    "../x": CRUN_TRAVERSAL, "..": CRUN_TRAVERSAL, "a b": CRUN_ANY_ID}, runu_checks={"../x", "..", "a b"}),
    indirect=["rt"])
def test_invalid_container_id(rt, mk, tmp_path, cid):
    b = mk()
    canary = os.path.join(os.path.dirname(rt.root), "x")  # what `../x` names
    os.makedirs(canary)
    with open(os.path.join(canary, "keep"), "w") as f:
        f.write("k")
    assert_failed(rt, rt("create", "--bundle", b, cid), ["invalid container id"])
    assert_nothing_left(rt)
    n = 1
    for command in (["state", cid], ["delete", cid], ["kill", cid, "9"], ["start", cid], ["ps", cid]):
        assert_failed(rt, rt(*command), ["invalid container id"], logged_before=n)
        n += 1
    res = rt("delete", "--force", cid)
    if rt.is_runu:
        assert_error(rt, res, ["invalid container id"], logged_before=n)
    # crun: a forced delete of an invalid id mostly succeeds, as for an unknown id (runu: an invalid id names
    # nothing it could delete, so it says so). Either way nothing outside the root may be touched.
    assert os.path.exists(os.path.join(canary, "keep"))
    assert os.path.isdir(os.path.join(b, "rootfs"))


def test_duplicate_id(rt, mk):
    b = mk()
    pid = rt.create("c1", b)
    before = rt.state("c1")
    assert_failed(rt, rt("create", "--bundle", mk("other"), "c1"), ["'c1'", "already exists"])
    assert rt.state("c1") == before and alive(pid)
    assert rt.new_processes() == [pid]


def bad_bundle_case(tmp_path, case):
    """A broken bundle (under tmp_path/bundle) and the words runu's error must contain."""
    from harness.runu import make_rootfs

    b = tmp_path / "bundle"
    good = json.dumps(spec())
    if case == "missing-bundle":
        return str(tmp_path / "no-such-bundle"), ["bundle", "does not exist"]
    make_rootfs(str(b / "rootfs"))
    cfg = b / "config.json"
    if case == "missing-config":
        return str(b), ["config.json"]
    if case == "invalid-json":
        cfg.write_text("{this is not json")
        return str(b), ["config.json", "not valid JSON"]
    if case == "truncated-json":
        cfg.write_text(good[: len(good) // 2])
        return str(b), ["config.json", "not valid JSON"]
    if case == "empty-config":
        cfg.write_text("")
        return str(b), ["config.json", "not valid JSON"]
    if case == "not-an-object":
        cfg.write_text("[1, 2]")
        return str(b), ["config.json", "object"]
    if case == "config-is-a-directory":
        cfg.mkdir()
        return str(b), ["config.json", "directory"]
    s = spec()
    if case == "no-root":
        del s["root"]
        words = ["root"]
    elif case == "rootfs-missing":
        s["root"]["path"] = "no-such-rootfs"
        words = ["rootfs", "no-such-rootfs"]
    elif case == "rootfs-is-a-file":
        (b / "afile").write_text("x")
        s["root"]["path"] = "afile"
        words = ["rootfs", "not a directory"]
    elif case == "empty-args":
        s["process"]["args"] = []
        words = ["process.args", "empty"]
    elif case == "no-process":
        del s["process"]
        words = ["process.args", "empty"]
    elif case == "args0-missing":
        s["process"]["args"] = ["/bin/no-such-program"]
        words = ["/bin/no-such-program", "does not exist"]
    else:
        raise AssertionError(case)
    cfg.write_text(json.dumps(s))
    return str(b), words


BAD_BUNDLES = ["missing-bundle", "missing-config", "invalid-json", "truncated-json", "empty-config", "not-an-object",
               "config-is-a-directory", "no-root", "rootfs-missing", "rootfs-is-a-file", "empty-args", "no-process",
               "args0-missing"]


@pytest.mark.parametrize("case", BAD_BUNDLES)
def test_bad_bundle(rt, tmp_path, case):
    bundle, words = bad_bundle_case(tmp_path, case)
    assert_failed(rt, rt("create", "--bundle", bundle, "--pid-file", str(tmp_path / "init.pid"), "c1"), words)
    assert_nothing_left(rt)
    assert not os.path.exists(tmp_path / "init.pid")


@pytest.mark.parametrize("rt", ["runu-library", *crun("a symlinked rootfs is runu's (and runc's libcontainer "
                                                      "validator's) refusal; the spec is silent and crun follows "
                                                      "the link")], indirect=True)
def test_rootfs_symlink_is_refused(rt, mk, tmp_path):
    b = mk()
    os.rename(os.path.join(b, "rootfs"), tmp_path / "real-rootfs")
    os.symlink(tmp_path / "real-rootfs", os.path.join(b, "rootfs"))
    assert_failed(rt, rt("create", "--bundle", b, "c1"), ["rootfs", "symlink"])
    assert_nothing_left(rt)


def elf_header(machine, elf_class=2):
    """A minimal little-endian ELF executable header (no program headers)."""
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    if elf_class == 2:
        return ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x100000, 0, 0, 0, 64, 56, 0, 64, 0, 0)
    return ident + struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, 0x100000, 0, 0, 0, 52, 32, 0, 40, 0, 0)


@pytest.mark.parametrize("rt, case, words", cases([
    ("pid-file-dir-missing", ["pid file", "No such file or directory"]),
    ("pid-file-is-a-directory", ["pid file", "Is a directory"]),
    ("preserve-fds-not-open", ["--preserve-fds", "not open"]),
    ("terminal-without-console-socket", ["terminal", "--console-socket"]),
    ("console-socket-missing", ["console socket", "No such file or directory"]),
], crun_xfail={"preserve-fds-not-open": "crun 1.8.1 silently passes nothing for fds that are not open; runu "
                                        "refuses (it must not hand its own descriptors to the container)"}),
    indirect=["rt"])
def test_bad_create_flags(rt, mk, tmp_path, case, words):
    config = spec()
    if case.startswith("terminal") or case.startswith("console"):
        config["process"]["terminal"] = True
    b = mk(config=config)
    flags = {"pid-file-dir-missing": ["--pid-file", str(tmp_path / "no-dir" / "init.pid")],
             "pid-file-is-a-directory": ["--pid-file", b],
             "preserve-fds-not-open": ["--preserve-fds", "5"],  # subprocess closes fds above 2
             "terminal-without-console-socket": [],
             "console-socket-missing": ["--console-socket", str(tmp_path / "no-such.sock")]}[case]
    assert_failed(rt, rt("create", "--bundle", b, *flags, "c1"), words)
    assert_nothing_left(rt)
    assert set(os.listdir(b)) - {"log.json"} == {"config.json", "rootfs"}


@runu_only("unikernel bundles are runu's own")
@pytest.mark.parametrize("case, words", [
    ("kernel-missing", ["runu runs unikernel bundles", "unikraft/bin/kernel", "sandbox", "has neither"]),
    ("kernel-not-elf", ["unikraft/bin/kernel", "ELF"]),
    ("kernel-riscv", ["unikraft/bin/kernel", "machine 243", "cannot run"]),
    ("kernel-is-a-directory", ["unikraft/bin/kernel", "regular file"]),
])
def test_bad_unikernel_bundle(rt, mk, case, words):
    b = mk(annotations={}, args=["/unikraft/bin/kernel"])
    kdir = os.path.join(b, "rootfs", "unikraft", "bin")
    if case != "kernel-missing":
        os.makedirs(kdir)
    kernel = os.path.join(kdir, "kernel")
    if case == "kernel-not-elf":
        with open(kernel, "wb") as f:
            f.write(os.urandom(4096).replace(b"\x7fELF", b"xELF"))
    elif case == "kernel-riscv":
        with open(kernel, "wb") as f:
            f.write(elf_header(243))
    elif case == "kernel-is-a-directory":
        os.mkdir(kernel)
    res = rt("create", "--bundle", b, "--pid-file", os.path.join(b, "init.pid"), "c1")
    assert_error(rt, res, words)
    assert_nothing_left(rt)
    assert not os.path.exists(os.path.join(b, "init.pid"))


@pytest.mark.parametrize("command", [["start"], ["state"], ["kill"], ["kill", "--all"], ["delete"], ["ps"],
                                     ["ps", "--format", "json"]])
def test_commands_on_unknown_id(rt, command):
    args = command[:1] + command[1:] + ["nope"] + (["9"] if command[0] == "kill" else [])
    assert_failed(rt, rt(*args), ["'nope'", "does not exist"])
    assert rt.ids() == []


@runu_only("runu's own flag parser")
@pytest.mark.parametrize("args, words", [
    (["create"], ["requires a container id"]),
    (["create", "--bogus", "c1"], ["flag provided but not defined", "--bogus"]),
    (["create", "--preserve-fds", "x", "c1"], ["--preserve-fds"]),
    (["kill", "c1", "9", "extra"], ["unexpected arguments", "extra"]),
    (["frobnicate", "c1"], ["unknown command", "frobnicate"]),
])
def test_usage_errors(rt, args, words):
    assert_error(rt, rt(*args), words)
    assert rt.ids() == []


def test_launcher_exits_without_finalising_but_never_loses_output():
    """The launcher `_exit`s after flushing (runu.main.main): output still arrives whole, and output that
    cannot be written turns success into 120, as the interpreter's own exit would."""
    r = subprocess.run([RUNU, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("runu version ") and r.stdout.endswith("\n"), r
    with open("/dev/full", "w") as full:
        r = subprocess.run([RUNU, "--version"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 120, r


@needs_root
@pytest.mark.parametrize("command", ["create", "run"])
def test_debug_shows_what_the_init_did_for_create_and_run(tmp_path, command):
    """`--debug` reaches the container init through create's and run's log level alike (run used to drop
    it), and the init's lines land in --log next to runu's own."""
    from conftest import RUNU_LIBRARY, base_env

    root, log = str(tmp_path / "root"), str(tmp_path / "log.json")
    b = write_bundle(str(tmp_path / "b"), spec(args=["/bin/busybox", "true"]))
    argv = [RUNU_LIBRARY, "--root", root, "--debug", "--log", log, "--log-format", "json", command, "--bundle", b, "c"]
    try:
        # no pipes: a created container's init keeps its stdio open until it runs
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=30, env=base_env())
        assert res.returncode == 0, res
        msgs = [json.loads(line) for line in log_lines(log)]
        assert {"level": "debug", "msg": "brought up lo"} in [
            {"level": m["level"], "msg": m["msg"]} for m in msgs], msgs
    finally:
        subprocess.run([RUNU_LIBRARY, "--root", root, "delete", "--force", "c"], capture_output=True, timeout=30,
                       env=base_env())
