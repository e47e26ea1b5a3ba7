"""The create/start flow with real processes, real network namespaces and real hooks."""

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import mocktainer
from mocktainer import specconv

from conftest import SRC, children_of, needs_root

pytestmark = [needs_root, pytest.mark.integration]


@pytest.fixture(autouse=True, params=["fork", "spawn"])
def init_mode(request, monkeypatch):
    """Every flow test runs with the init forked from this process and with a fresh interpreter."""
    from mocktainer import process

    monkeypatch.setattr(process, "INIT_MODE", request.param)
    return request.param

ENV = ["PATH=/usr/local/bin:/usr/bin:/bin"]


def spec(namespaces=None, hooks=None, annotations=None):
    s = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["true"]},
         "annotations": annotations or {}, "linux": {"namespaces": namespaces or []}}
    if hooks:
        s["hooks"] = hooks
    return s


def new(state_root, bundle, cid="c1", **kw):
    return mocktainer.create(state_root, cid, specconv.create_config(spec(**kw), bundle))


class Output:
    """A pipe the container writes to; read it all once the writer is gone."""

    def __init__(self):
        self.r, self.w = os.pipe()

    def close_writer(self):
        if self.w >= 0:
            os.close(self.w)
            self.w = -1

    def read(self):
        self.close_writer()
        chunks = []
        while chunk := os.read(self.r, 65536):
            chunks.append(chunk)
        os.close(self.r)
        return b"".join(chunks).decode()


def run_to_end(c, args, env=ENV, **kw):
    out = Output()
    p = mocktainer.Process(args=args, env=env, stdout=out.w, stderr=out.w, **kw)
    c.start(p)
    c.exec()
    out.close_writer()
    code = p.wait()
    return code, out.read()


# ---- directories and modes -------------------------------------------------------------

def test_modes_of_root_container_dir_and_fifo(state_root, bundle):
    old = os.umask(0o077)
    try:
        c = new(state_root, bundle)
        assert stat.S_IMODE(os.stat(state_root).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(c.dir).st_mode) == 0o711
        p = mocktainer.Process(args=["true"], env=ENV)
        c.start(p)
        st = os.stat(os.path.join(c.dir, "exec.fifo"))
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o622
    finally:
        os.umask(old)


def test_duplicate_create(state_root, bundle):
    new(state_root, bundle)
    with pytest.raises(mocktainer.ExistsError, match="'c1' already exists"):
        new(state_root, bundle)


def test_racing_creators_exactly_one_wins(state_root, bundle, tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {SRC!r})
        import mocktainer
        from mocktainer import specconv
        cfg = specconv.create_config({spec()!r}, {bundle!r})
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        try:
            mocktainer.create({state_root!r}, "race", cfg)
            print("won")
        except mocktainer.ExistsError:
            print("exists")
    """)
    for _ in range(5):
        procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(0.3)
        go.touch()
        results = sorted(p.communicate(timeout=30)[0].strip() for p in procs)
        assert results == ["exists", "exists", "exists", "won"]
        assert os.listdir(os.path.join(state_root, "race")) == []
        os.rmdir(os.path.join(state_root, "race"))
        go.unlink()


def test_rootfs_validation(state_root, tmp_path):
    def cfg(rootfs):
        c = specconv.create_config(spec(), str(tmp_path))
        c.rootfs = rootfs
        return c

    with pytest.raises(mocktainer.ConfigError, match="does not exist"):
        mocktainer.create(state_root, "a", cfg(str(tmp_path / "missing")))
    with pytest.raises(mocktainer.ConfigError, match="not an absolute path"):
        mocktainer.create(state_root, "a", cfg("relative/rootfs"))
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(mocktainer.ConfigError, match="symlink"):
        mocktainer.create(state_root, "a", cfg(str(tmp_path / "link")))


# ---- the lifecycle ---------------------------------------------------------------------

def test_lifecycle_statuses_and_output(state_root, bundle):
    c = new(state_root, bundle, annotations={"k": "v"})
    out = Output()
    p = mocktainer.Process(args=["sh", "-c", "read x; echo got $x; echo err >&2"], env=ENV,
                           stdin=subprocess.PIPE if False else None, stdout=out.w, stderr=out.w)
    r, w = os.pipe()
    p.stdin = r
    c.start(p)
    os.close(r)
    assert c.status() == mocktainer.Status.CREATED
    loaded = mocktainer.load(state_root, "c1")
    assert loaded.status() == "created"
    assert loaded.state() == c.state()
    assert loaded.oci_state() == {"ociVersion": "1.0.2", "id": "c1", "status": "created", "pid": p.pid(),
                                  "bundle": bundle, "annotations": {"k": "v"}}
    # Another process sees the same.
    probe = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {SRC!r}); import mocktainer; "
                            f"print(mocktainer.load({state_root!r}, 'c1').status())"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "created"
    c.exec()
    assert c.status() == "running"
    assert not os.path.exists(c.fifo_path)
    os.write(w, b"hi\n")
    os.close(w)
    out.close_writer()
    assert p.wait() == 0
    assert out.read() == "got hi\nerr\n"
    assert c.status() == "stopped" and c.oci_state()["pid"] == 0
    c.destroy()
    assert not os.path.exists(c.dir)
    c.destroy()  # twice is fine


def test_state_json_contents(state_root, bundle):
    c = new(state_root, bundle, namespaces=[{"type": "network"}])
    p = mocktainer.Process(args=["true"], env=ENV)
    c.start(p)
    with open(os.path.join(c.dir, "state.json")) as f:
        d = json.load(f)
    assert set(d) >= {"id", "init_process_pid", "init_process_start", "created", "config", "namespace_paths"}
    assert d["id"] == "c1" and d["init_process_pid"] == p.pid()
    assert d["created"].endswith("Z") and d["created"][10] == "T"
    assert d["namespace_paths"] == {"NEWNET": f"/proc/{p.pid()}/ns/net"}
    assert d["config"]["rootfs"] == os.path.join(bundle, "rootfs")
    assert os.readlink(d["namespace_paths"]["NEWNET"]) != os.readlink("/proc/self/ns/net")


def test_stopped_when_zombie(state_root, bundle):
    c = new(state_root, bundle)
    p = mocktainer.Process(args=["true"], env=ENV)
    c.start(p)
    c.exec()
    # Don't reap: the process is a zombie, which must count as stopped.
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(f"/proc/{p.pid()}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert c.status() == "stopped"
    p.wait()


def test_stopped_when_pid_reused(state_root, bundle):
    c = new(state_root, bundle)
    p = mocktainer.Process(args=["sleep", "30"], env=ENV)
    c.start(p)
    # Pretend the saved pid now belongs to another process: a live one with a different start time
    # (start times are in clock ticks, so let at least one tick pass).
    time.sleep(0.05)
    other = subprocess.Popen(["sleep", "30"])
    try:
        with open(os.path.join(c.dir, "state.json")) as f:
            d = json.load(f)
        d["init_process_pid"] = other.pid
        with open(os.path.join(c.dir, "state.json"), "w") as f:
            json.dump(d, f)
        assert mocktainer.load(state_root, "c1").status() == "stopped"
        with pytest.raises(mocktainer.NotRunningError):
            mocktainer.load(state_root, "c1").signal(signal.SIGKILL)
        assert other.poll() is None  # the unrelated process was not signalled
    finally:
        other.kill()
        other.wait()
        p.signal(signal.SIGKILL)
        p.wait()


def test_signal_and_destroy_rules(state_root, bundle):
    c = new(state_root, bundle)
    p = mocktainer.Process(args=["sleep", "30"], env=ENV)
    c.start(p)
    c.exec()
    with pytest.raises(mocktainer.RunningError, match="running"):
        c.destroy()
    assert c.status() == "running" and os.path.exists(c.dir)
    c.signal(signal.SIGTERM)
    assert p.wait() == -signal.SIGTERM
    assert c.status() == "stopped"
    with pytest.raises(mocktainer.NotRunningError):
        c.signal(signal.SIGTERM)
    c.destroy()
    assert not os.path.exists(c.dir)


def test_destroy_created_kills_the_init(state_root, bundle):
    c = new(state_root, bundle)
    p = mocktainer.Process(args=["true"], env=ENV)
    c.start(p)
    pid = p.pid()
    c.destroy()
    assert not os.path.exists(c.dir)
    assert not os.path.exists(f"/proc/{pid}")


def test_signal_created_container(state_root, bundle):
    c = new(state_root, bundle)
    p = mocktainer.Process(args=["true"], env=ENV)
    c.start(p)
    c.signal(signal.SIGTERM)
    assert p.wait() == -signal.SIGTERM
    assert c.status() == "stopped"


def test_exec_twice_is_an_error(state_root, bundle):
    c = new(state_root, bundle)
    p = mocktainer.Process(args=["sleep", "5"], env=ENV)
    c.start(p)
    c.exec()
    with pytest.raises(mocktainer.Error, match="not in created state"):
        c.exec()
    p.signal(signal.SIGKILL)
    p.wait()


# ---- namespaces ------------------------------------------------------------------------

def test_new_netns_has_only_lo_up(state_root, bundle):
    c = new(state_root, bundle, namespaces=[{"type": "network"}])
    code, out = run_to_end(c, ["ip", "-o", "link"])
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "lo:" in lines[0] and "UP" in lines[0].split("<")[1].split(">")[0].split(",")


def test_join_named_netns(state_root, bundle, netns):
    name = netns()
    subprocess.run(["ip", "-n", name, "link", "add", "vtest0", "type", "veth", "peer", "name", "vtest1"], check=True)
    c = new(state_root, bundle, namespaces=[{"type": "network", "path": f"/run/netns/{name}"}])
    code, out = run_to_end(c, ["ip", "-o", "link"])
    assert code == 0
    assert "vtest0" in out and "vtest1" in out
    assert c.state().namespace_paths == {"NEWNET": f"/run/netns/{name}"}


def test_join_netns_of_wrong_type_is_refused_before_anything_exists(state_root, bundle):
    with pytest.raises(mocktainer.ConfigError, match="is a uts namespace, not a network namespace"):
        new(state_root, bundle, namespaces=[{"type": "network", "path": "/proc/self/ns/uts"}])
    assert not os.path.exists(os.path.join(state_root, "c1"))


def test_failing_start_container_hook_fails_exec_without_poststart(state_root, bundle, tmp_path):
    marker = tmp_path / "poststart-ran"
    hooks = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 4"]}],
             "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]}]}
    c = new(state_root, bundle, hooks=hooks)
    p = mocktainer.Process(args=["true"], env=ENV)
    c.start(p)
    with pytest.raises(mocktainer.Error, match="failed to start: startContainer hook #0 .*exit status 4: nope"):
        c.exec()
    assert p.wait() == 127
    assert not marker.exists()
    assert c.status() == "stopped"


def test_all_poststop_hooks_run_even_when_one_fails(state_root, bundle, tmp_path, caplog):
    marker = tmp_path / "second-ran"
    hooks = {"poststop": [{"path": "/bin/false"}, {"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]}]}
    c = new(state_root, bundle, hooks=hooks)
    code, _ = run_to_end(c, ["true"])
    c.destroy()
    assert marker.exists()
    assert any("poststop hook #0" in r.getMessage() for r in caplog.records)


def test_failed_create_runs_poststop(state_root, bundle, tmp_path):
    marker = tmp_path / "poststop-ran"
    hooks = {"createRuntime": [{"path": "/bin/false"}],
             "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {marker}"]}]}
    c = new(state_root, bundle, hooks=hooks)
    with pytest.raises(mocktainer.HookError):
        c.start(mocktainer.Process(args=["true"], env=ENV))
    assert json.loads(marker.read_text())["status"] == "stopped"
    c.destroy()
    assert marker.exists()


def test_no_netns_shares_the_host_network(state_root, bundle):
    c = new(state_root, bundle)
    code, out = run_to_end(c, ["readlink", "/proc/self/ns/net"])
    assert out.strip() == os.readlink("/proc/self/ns/net")


# ---- errors reported by the init -------------------------------------------------------

def assert_nothing_left(c, parent=None):
    assert os.listdir(c.dir) == []
    assert children_of(os.getpid()) == [] if parent is None else True


@pytest.mark.parametrize("args,env,match", [
    (["/no/such/binary"], ENV, "no such executable"),
    (["no-such-command-xyz"], ENV, "executable file not found in \\$PATH"),
    (["true"], ["NOEQUALS"], "invalid environment variable 'NOEQUALS'"),
    (["true"], ["A=b\0c"], "NUL byte"),
    ([], ENV, "no args"),
])
def test_init_errors_raise_in_the_caller(state_root, bundle, args, env, match):
    c = new(state_root, bundle, namespaces=[{"type": "network"}])
    before = set(children_of(os.getpid()))
    with pytest.raises(mocktainer.InitError, match=match):
        c.start(mocktainer.Process(args=args, env=env))
    assert os.listdir(c.dir) == []
    assert set(children_of(os.getpid())) == before
    assert c.status() == "stopped"


@pytest.mark.parametrize("hook", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_fails_start_and_leaves_nothing(state_root, bundle, hook):
    hooks = {hook: [{"path": "/bin/sh", "args": ["sh", "-c", "echo broken-hook >&2; exit 3"]}]}
    c = new(state_root, bundle, hooks=hooks)
    before = set(children_of(os.getpid()))
    with pytest.raises(mocktainer.Error, match=f"{hook} hook #0 .*exit status 3: broken-hook"):
        c.start(mocktainer.Process(args=["true"], env=ENV))
    assert os.listdir(c.dir) == []
    assert set(children_of(os.getpid())) == before


# ---- hooks -----------------------------------------------------------------------------

def test_hooks_order_state_and_env(state_root, bundle, tmp_path):
    log = tmp_path / "hooks.log"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\nstate=$(cat)\necho "$1 $HOOKVAR $state" >> {log}\n')
    script.chmod(0o755)
    hooks = {name: [{"path": str(script), "args": ["hook.sh", name], "env": [f"HOOKVAR=v-{name}"]}]
             for name in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")}
    c = new(state_root, bundle, hooks=hooks, annotations={"an": "x"})
    out = Output()
    p = mocktainer.Process(args=["sh", "-c", f"echo container >> {log}"], env=ENV, stdout=out.w)
    c.start(p)
    c.exec()
    assert p.wait() == 0
    c.destroy()
    out.read()
    lines = log.read_text().splitlines()
    names = [line.split()[0] for line in lines]
    assert names[:4] == ["prestart", "createRuntime", "createContainer", "startContainer"]
    assert names[4:] in (["container", "poststart", "poststop"], ["poststart", "container", "poststop"])
    statuses = {}
    for line in lines:
        if line.startswith("container"):
            continue
        name, var, state = line.split(" ", 2)
        assert var == f"v-{name}"
        st = json.loads(state)
        assert st["id"] == "c1" and st["bundle"] == bundle and st["annotations"] == {"an": "x"}
        assert st["pid"] == p.pid()
        statuses[name] = st["status"]
    assert statuses == {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
                        "startContainer": "created", "poststart": "running", "poststop": "stopped"}


def test_hook_timeout_kills_it(state_root, bundle, tmp_path):
    marker = tmp_path / "survived"
    hooks = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", f"sleep 30; touch {marker}"], "timeout": 1}]}
    c = new(state_root, bundle, hooks=hooks)
    t = time.monotonic()
    with pytest.raises(mocktainer.HookError, match="timeout of 1s"):
        c.start(mocktainer.Process(args=["true"], env=ENV))
    assert time.monotonic() - t < 10
    assert os.listdir(c.dir) == []


def test_hook_leaving_a_daemon_does_not_block(state_root, bundle):
    hooks = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 20 & echo started"], "timeout": 10}]}
    c = new(state_root, bundle, hooks=hooks)
    t = time.monotonic()
    c.start(mocktainer.Process(args=["true"], env=ENV))
    assert time.monotonic() - t < 5
    subprocess.run(["pkill", "-f", "^sleep 20$"], check=False)


def test_failing_poststart_only_warns(state_root, bundle, caplog):
    c = new(state_root, bundle, hooks={"poststart": [{"path": "/bin/false"}]})
    code, _ = run_to_end(c, ["true"])
    assert code == 0
    assert any("poststart hook #0" in r.getMessage() for r in caplog.records)


# ---- what reaches the container process ------------------------------------------------

def test_only_stdio_and_extra_files_reach_the_process(state_root, bundle, tmp_path):
    leaky = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(leaky, True)
    extra = open(tmp_path / "extra.txt", "w+")
    extra.write("extra-content")
    extra.flush()
    try:
        c = new(state_root, bundle, namespaces=[{"type": "network"}])
        code, out = run_to_end(c, ["sh", "-c", "ls /proc/self/fd; cat <&3"], extra_files=[extra])
    finally:
        os.close(leaky)
        extra.close()
    fds = sorted(int(x) for x in out.split() if x.isdigit())
    # 0-2 stdio, 3 the extra file, and the one `ls` opens to read /proc/self/fd.
    assert fds[:4] == [0, 1, 2, 3] and len(fds) == 5


def test_extra_file_is_fd_3(state_root, bundle, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("via-fd-3")
    with open(f) as extra:
        c = new(state_root, bundle)
        code, out = run_to_end(c, ["sh", "-c", "cat <&3"], extra_files=[extra])
    assert out == "via-fd-3"


def test_environment_is_exactly_the_process_env(state_root, bundle):
    os.environ["MOCKTAINER_TEST_LEAK"] = "1"
    try:
        c = new(state_root, bundle)
        code, out = run_to_end(c, ["/usr/bin/env"], env=["A=1", "B=two words"])
    finally:
        del os.environ["MOCKTAINER_TEST_LEAK"]
    assert sorted(out.splitlines()) == ["A=1", "B=two words"]


def test_sigpipe_is_default_in_the_process(state_root, bundle):
    c = new(state_root, bundle)
    code, out = run_to_end(c, ["sh", "-c", "grep SigIgn /proc/self/status"])
    ignored = int(out.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))


def test_parent_death_signal(state_root, bundle, tmp_path):
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        import mocktainer
        from mocktainer import specconv
        cfg = specconv.create_config({spec()!r}, {bundle!r})
        cfg.parent_death_signal = 9
        c = mocktainer.create({state_root!r}, "pd", cfg)
        p = mocktainer.Process(args=["sleep", "60"], env={ENV!r})
        c.start(p)
        c.exec()
        open({str(pidfile)!r}, "w").write(str(p.pid()))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    pid = int(pidfile.read_text())
    deadline = time.time() + 10
    from mocktainer.process import alive
    while alive(pid) and time.time() < deadline:
        time.sleep(0.02)
    assert not alive(pid), "the container outlived its parent despite parent_death_signal"


def test_init_logs_reach_the_callers_logger(state_root, bundle, caplog):
    caplog.set_level(logging.DEBUG, logger="mocktainer.init")
    c = new(state_root, bundle, namespaces=[{"type": "network"}])
    c.start(mocktainer.Process(args=["true"], env=ENV, log_level="debug"))
    msgs = [r.getMessage() for r in caplog.records if r.name == "mocktainer.init"]
    assert "brought up lo" in msgs and "waiting on exec.fifo for start" in msgs


def test_init_imports_only_stdlib_and_own_modules():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        before = set(sys.modules)
        import mocktainer.init
        new = sorted(set(sys.modules) - before)
        print("\\n".join(new))
    """)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    mods = out.split()
    stdlib = set(sys.stdlib_module_names)
    foreign = [m for m in mods if m.split(".")[0] not in stdlib and m.split(".")[0] != "mocktainer"]
    assert foreign == []
    heavy = {"re", "json", "enum", "typing", "subprocess", "logging", "socket", "dataclasses", "pyroute2", "ctypes"}
    assert heavy.isdisjoint(mods), heavy & set(mods)


def test_auto_mode_spawns_when_the_caller_has_threads(state_root, bundle, monkeypatch):
    import threading

    from mocktainer import process

    monkeypatch.setattr(process, "INIT_MODE", "auto")
    c = new(state_root, bundle)
    p = mocktainer.Process(args=["true"], env=ENV)
    c.start(p)
    assert "-I" not in open(f"/proc/{p.pid()}/cmdline").read().split("\0")  # forked: our own command line
    c.destroy()

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        c = new(state_root, bundle, cid="c2")
        p = mocktainer.Process(args=["true"], env=ENV)
        c.start(p)
        argv = open(f"/proc/{p.pid()}/cmdline").read().split("\0")
        assert argv[1:4] == ["-I", "-S", "-c"]  # a fresh interpreter
        c.destroy()
    finally:
        stop.set()
        t.join()


def test_process_has_a_session_of_its_own(state_root, bundle):
    c = new(state_root, bundle)
    code, out = run_to_end(c, ["sh", "-c", "echo $$; ps -o sid= -p $$"])
    pid, sid = out.split()
    assert pid == sid and int(sid) != os.getsid(0)
