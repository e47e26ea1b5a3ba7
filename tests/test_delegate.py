"""Containers that are not unikernels go to the delegate OCI runtime (runu/delegate.py, issue 10).

Real runtimes: runu hands plain bundles to crun (the default here) or to runc, while a unikernel
bundle beside them is booted by runu itself under the same --root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading

import pytest

from conftest import RUNU, base_env, needs_root
from harness.runu import runu, crun_unusable, spec, wait_exit, write_bundle

from mocktainer.error import ConfigError
from mocktainer.ids import ID_CHARS
from runu import delegate

CRUN = shutil.which("crun")
RUNC = shutil.which("runc")
QEMU = shutil.which("qemu-system-x86_64")
TCG = {"org.unikraft.runu.accel": "tcg"}
PID_NS = [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]


# ---- pure logic -----------------------------------------------------------------------------

def test_delegate_dir_is_no_valid_id():
    assert not set(delegate.DELEGATE_DIR) <= ID_CHARS


@pytest.mark.parametrize("command, args, cid", [
    ("create", ["--bundle", "/b", "--pid-file", "/p", "c1"], "c1"),
    ("create", ["-b", "/b", "--console-socket=/s", "--no-pivot", "c1"], "c1"),
    ("kill", ["--all", "c1", "9"], "c1"),
    ("delete", ["-f", "c1"], "c1"),
    ("ps", ["--format", "json", "c1"], "c1"),
    ("exec", ["--process", "p.json", "--detach", "--pid-file", "x", "c1"], "c1"),
    ("exec", ["-t", "-e", "A=b", "--cwd", "/", "c1", "sh", "-c", "true"], "c1"),
    ("update", ["--memory", "1000", "--pids-limit=5", "c1"], "c1"),
    ("events", ["--stats", "--interval", "5s", "c1"], "c1"),
    ("pause", ["c1"], "c1"),
    ("delete", ["--force", "--", "c1"], "c1"),
    ("state", [], None),
])
def test_find_id(command, args, cid):
    assert delegate.find_id(command, args) == cid


def test_bundle_of(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert delegate.bundle_of(["c1"]) == str(tmp_path)
    assert delegate.bundle_of(["--bundle", "/x/b", "c1"]) == "/x/b"
    assert delegate.bundle_of(["-b=/y", "c1"]) == "/y"
    assert delegate.bundle_of(["--pid-file", "p", "--bundle=rel", "c1"]) == str(tmp_path / "rel")


def test_command_line_passes_the_global_flags_and_arguments_unchanged():
    g = {"root": "/run/runu", "log": "/b/log.json", "log-format": "json", "systemd-cgroup": True, "debug": False}
    argv = delegate.command_line(g, "/run/runu", "/usr/bin/crun", "create",
                                 ["--bundle", "/b", "--preserve-fds", "2", "--no-new-keyring", "c1"])
    assert argv == ["/usr/bin/crun", "--root", "/run/runu/@delegate", "--log", "/b/log.json", "--log-format", "json",
                    "--systemd-cgroup", "create", "--bundle", "/b", "--preserve-fds", "2", "--no-new-keyring", "c1"]


def test_choice_environment_then_config_file_then_default(tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text('delegate = "/opt/rt/runc"\n')
    both = {"RUNU_CONFIG": str(conf), "RUNU_DELEGATE": "/opt/rt/crun"}
    assert delegate.choose(both) == ("/opt/rt/crun", "environment variable RUNU_DELEGATE")
    assert delegate.choose({"RUNU_CONFIG": str(conf)}) == ("/opt/rt/runc", f"delegate in {conf}")
    path, source = delegate.choose({"RUNU_CONFIG": ""})
    first = next(os.path.join(d, n) for n in ("crun", "runc") for d in delegate.SYSTEM_DIRS
                 if os.access(os.path.join(d, n), os.X_OK))
    assert path == first and source.startswith("default: the first of crun, runc")
    # a bare name is looked up in PATH, then the system directories
    assert delegate.choose({"RUNU_CONFIG": "", "RUNU_DELEGATE": "sh", "PATH": ""})[0] in ("/usr/bin/sh", "/bin/sh")


def test_no_delegate_found_names_what_to_install(tmp_path):
    empty = str(tmp_path)
    assert delegate.choose({"RUNU_CONFIG": ""}, dirs=(empty,))[0] is None
    with pytest.raises(ConfigError, match="install crun or runc"):
        delegate.binary({"RUNU_CONFIG": ""}, dirs=(empty,))


def test_is_unikernel(tmp_path):
    b = write_bundle(str(tmp_path / "b"), spec(annotations={}))
    assert delegate.is_unikernel(b) is False
    os.makedirs(os.path.join(b, "rootfs", "unikraft", "bin"))
    open(os.path.join(b, "rootfs", "unikraft", "bin", "kernel"), "w").close()
    assert delegate.is_unikernel(b) is True
    write_bundle(b, spec(annotations={"io.kubernetes.cri.container-type": "sandbox"}), rootfs=False)
    assert delegate.is_unikernel(b) is False  # a pod's sandbox is always a real container
    write_bundle(b, "{not json", rootfs=False)
    assert delegate.is_unikernel(b) is None  # runu's own create says what is wrong
    assert delegate.is_unikernel(str(tmp_path / "missing")) is None


# ---- real runtimes ----------------------------------------------------------------------------

def create(root, bundle, cid, env=None, log=None):
    """`runu create`; output in a file (the container inherits stdio, a pipe would stay open)."""
    import tempfile

    flags = ["--root", root] + (["--log", log, "--log-format", "json"] if log else [])
    with tempfile.TemporaryFile("w+") as out:
        r = subprocess.run([RUNU, *flags, "create", "--bundle", bundle, "--pid-file", f"{bundle}/pid", cid],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env or base_env(), timeout=60)
        out.seek(0)
        r.stderr = out.read()
    return r


def left(root):
    """Container directories in runu's root and in its delegate's."""
    own = [n for n in os.listdir(root) if n != delegate.DELEGATE_DIR] if os.path.isdir(root) else []
    d = os.path.join(root, delegate.DELEGATE_DIR)
    return own + (os.listdir(d) if os.path.isdir(d) else [])


def env_with(**kw):
    e = base_env()
    e.update(kw)
    return e


needs_crun = pytest.mark.skipif(bool(crun_unusable()), reason=crun_unusable() or "")


@pytest.fixture
def tiny(tmp_path_factory):
    if QEMU is None:
        pytest.skip("qemu-system-x86 is not installed")
    from guest.build import build_tiny

    return build_tiny(str(tmp_path_factory.mktemp("k")), "pvh")


def unikernel(tmp_path, kernel, name="uk", namespaces=None):
    from harness.images import unikernel_bundle

    b = unikernel_bundle(tmp_path / name, kernel, ["idle"], annotations=TCG,
                                 resources={"memory": {"limit": 160 << 20}})
    if namespaces is not None:
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        cfg["linux"]["namespaces"] = namespaces
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    return b


@needs_root
@needs_crun
@pytest.mark.integration
@pytest.mark.parametrize("name", ["crun", pytest.param("runc", marks=pytest.mark.skipif(RUNC is None,
                                                                                          reason="no runc"))])
def test_plain_bundle_lifecycle_through_the_delegate(tmp_path, root, name):
    env = env_with(RUNU_DELEGATE=name)
    b = write_bundle(str(tmp_path / "b"), spec(["/bin/busybox", "sleep", "30"], annotations={}, namespaces=PID_NS))
    log = str(tmp_path / "log.json")
    r = create(root, b, "p1", env=env, log=log)
    assert r.returncode == 0, r.stderr
    assert os.listdir(os.path.join(root, delegate.DELEGATE_DIR)) == ["p1"]  # the delegate's state, not runu's
    assert left(root) == ["p1"]
    pid = int(open(f"{b}/pid").read())
    st = json.loads(runu(root, "state", "p1", env=env).stdout)
    assert st["status"] == "created" and st["pid"] == pid
    assert runu(root, "start", "p1", env=env).returncode == 0
    # a real container: PID 1 of its own PID namespace, in the image's root, which runu itself never does
    e = runu(root, "exec", "p1", "/bin/busybox", "sh", "-c", "echo $$; ls /", env=env)
    assert e.returncode == 0, e.stderr
    lines = e.stdout.split()
    assert lines[0] != str(pid) and os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert "bin" in lines and "tmp" not in lines  # the bundle's rootfs, not the host's /
    assert open(f"/proc/{pid}/status").read().count("NSpid") == 1
    nspid = [ln for ln in open(f"/proc/{pid}/status") if ln.startswith("NSpid")][0].split()
    assert nspid[-1] == "1"
    assert json.loads(runu(root, "ps", "--format", "json", "p1", env=env).stdout)[0] == pid
    listed = json.loads(runu(root, "list", "--format", "json", env=env).stdout)
    assert [(i["id"], i["status"], i["pid"], i["bundle"]) for i in listed] == [("p1", "running", pid, b)]
    assert runu(root, "kill", "--all", "p1", "KILL", env=env).returncode == 0
    assert wait_exit(pid) is not None
    d = runu(root, "delete", "p1", env=env)
    assert d.returncode == 0, d.stderr
    assert left(root) == []
    assert runu(root, "delete", "--force", "p1", env=env).returncode == 0  # containerd's second delete


@needs_root
@needs_crun
@pytest.mark.integration
def test_both_kinds_under_one_root_one_namespace_of_ids(tmp_path, root, tiny):
    plain = write_bundle(str(tmp_path / "b"), spec(annotations={}))
    uk = unikernel(tmp_path, tiny)
    assert create(root, plain, "a").returncode == 0
    assert create(root, uk, "u").returncode == 0
    # the same id cannot exist twice, whichever kind comes second
    r = create(root, uk, "a")
    assert r.returncode == 1 and r.stderr.strip() == "runu: container 'a' already exists (run by the delegate OCI " \
                                                     "runtime)", r.stderr
    r = create(root, plain, "u")
    assert r.returncode == 1 and r.stderr.strip() == "runu: container 'u' already exists", r.stderr
    assert sorted(left(root)) == ["a", "u"]
    listed = json.loads(runu(root, "list", "--format", "json").stdout)
    assert [(i["id"], i["status"]) for i in listed] == [("a", "created"), ("u", "created")]
    table = runu(root, "list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert [ln.split()[0] for ln in table[1:]] == ["a", "u"]
    # exec into a unikernel stays runu's clear refusal; into the delegated one it works
    assert "not supported" in runu(root, "exec", "u", "/bin/true").stderr
    assert runu(root, "start", "a").returncode == 0
    assert runu(root, "exec", "a", "/bin/busybox", "true").returncode == 0
    for cid in ("a", "u"):
        assert runu(root, "delete", "--force", cid).returncode == 0
    assert left(root) == []


@needs_root
@needs_crun
@pytest.mark.integration
def test_racing_creates_of_one_id_of_both_kinds_leave_one(tmp_path, root, tiny):
    plain = write_bundle(str(tmp_path / "b"), spec(annotations={}))
    uk = unikernel(tmp_path, tiny)
    for i in range(4):
        cid = f"race{i}"
        results: dict[str, subprocess.CompletedProcess] = {}
        threads = [threading.Thread(target=lambda k=k, b=b, c=cid, out=results: out.__setitem__(k, create(root, b, c)))
                   for k, b in (("plain", plain), ("uk", uk))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [k for k, r in results.items() if r.returncode == 0]
        assert len(ok) <= 1 and left(root).count(cid) == len(ok), (results, left(root))
        runu(root, "delete", "--force", cid)
        assert left(root) == []


@needs_root
@pytest.mark.integration
@pytest.mark.parametrize("case", ["missing", "not-executable", "bare-name", "fails", "is-runu"])
def test_bad_delegate_is_one_line_and_leaves_nothing(tmp_path, root, case):
    b = write_bundle(str(tmp_path / "b"), spec(annotations={}))
    rt = tmp_path / "rt"
    if case == "not-executable":
        rt.write_text("#!/bin/sh\nexit 0\n")
        rt.chmod(0o644)
    elif case == "fails":
        # a delegate that refuses, as crun or runc would: its own log line and message reach the client verbatim
        rt.write_text('#!/bin/sh\nwhile [ "$1" != --log ]; do shift; done\n'
                      'echo \'{"level":"error","msg":"delegate says no","time":"2026-01-01T00:00:00Z"}\' >> "$2"\n'
                      'echo "delegate says no" >&2\nexit 1\n')
        rt.chmod(0o755)
    value = {"missing": str(tmp_path / "nothing"), "bare-name": "no-such-oci-runtime", "is-runu": RUNU}.get(case,
                                                                                                          str(rt))
    log = str(tmp_path / "log.json")
    r = create(root, b, "c1", env=env_with(RUNU_DELEGATE=value), log=log)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    logged = [json.loads(ln) for ln in open(log)]
    assert logged[-1]["level"] == "error" and logged[-1]["msg"] in lines[0]
    if case == "fails":
        assert lines == ["delegate says no"] and len(logged) == 1
    else:
        assert lines[0].startswith("runu: ") and ("install crun or runc" in lines[0]), lines
    assert left(root) == []


@needs_root
@needs_crun
@pytest.mark.integration
def test_a_failing_real_delegate_reports_its_own_error(tmp_path, root):
    b = write_bundle(str(tmp_path / "b"), spec(["/no/such/program"], annotations={}))
    log = str(tmp_path / "log.json")
    r = create(root, b, "c1", log=log)
    assert r.returncode == 1 and "runu" not in r.stderr and r.stderr.strip(), r.stderr
    assert any("/no/such/program" in json.loads(ln)["msg"] for ln in open(log))  # crun's own JSON line
    assert left(root) == []


@needs_root
def test_features_show_the_delegate_and_its_source(tmp_path):
    f = json.loads(subprocess.run([RUNU, "features"], capture_output=True, text=True,
                                  env=env_with(RUNU_DELEGATE="/opt/x/runc")).stdout)
    assert f["annotations"]["org.unikraft.runu.delegate"] == "/opt/x/runc"
    assert f["annotations"]["org.unikraft.runu.delegate.source"] == "environment variable RUNU_DELEGATE"
    f = json.loads(subprocess.run([RUNU, "features"], capture_output=True, text=True,
                                  env=env_with(RUNU_CONFIG="")).stdout)
    assert f["annotations"]["org.unikraft.runu.delegate.source"].startswith("default")


@needs_root
@pytest.mark.integration
def test_ignored_namespace_path_must_be_of_its_type(tmp_path, root, tiny):
    b = unikernel(tmp_path, tiny, namespaces=[{"type": "network"}, {"type": "pid", "path": "/proc/self/ns/net"}])
    r = create(root, b, "u1")
    assert r.returncode == 1 and "pid namespace path /proc/self/ns/net is a network namespace" in r.stderr, r.stderr
    assert left(root) == []
    b = unikernel(tmp_path, tiny, name="ok",
                  namespaces=[{"type": "network"}, {"type": "pid", "path": "/proc/self/ns/pid"}])
    assert create(root, b, "u2").returncode == 0  # the right type: still ignored
    assert runu(root, "delete", "--force", "u2").returncode == 0


@needs_root
def test_config_json_that_is_a_fifo_does_not_hang_the_dispatch(tmp_path, root):
    """Deciding whether a bundle is a unikernel reads config.json like runu's own create does: a FIFO
    planted there is one line of error, never a runu that waits for a writer."""
    b = tmp_path / "b"
    (b / "rootfs").mkdir(parents=True)
    os.mkfifo(b / "config.json")
    r = create(root, str(b), "x")
    assert r.returncode == 1 and r.stderr.strip().endswith("config.json is a FIFO, not a regular file"), r.stderr
    assert left(root) == []
