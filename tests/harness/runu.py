"""Driving an OCI runtime binary (runu, or crun as a reference) as separate processes, like containerd does.

Every call's stdout/stderr go to temporary files, not pipes: a container process
inherits the runtime's stdio, and a pipe it holds open would make a reader wait
for the container to exit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import base_env, children_of

from .wait import wait_for  # noqa: F401  (re-exported: tests import it from here)

RUNU = shutil.which("runu") or "/usr/local/bin/runu"
RUNU_LIBRARY = shutil.which("runu-library")  # conftest: runu without the delegate
CRUN = shutil.which("crun")
BUSYBOX = "/bin/busybox"
SCHEMA_DIR = "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema"

FIRECRACKER = shutil.which("firecracker")


def _firecracker_usable() -> bool:
    from mocktainer.unikraft import host

    return FIRECRACKER is not None and host.kvm_usable()


needs_firecracker = pytest.mark.skipif(
    not _firecracker_usable(), reason="needs firecracker (bash scripts/setup-firecracker.sh) and a usable /dev/kvm")
BACKENDS = ["qemu", pytest.param("firecracker", marks=needs_firecracker)]
"""The VMM backends to parametrize over; firecracker only where it can run."""

SANDBOX = {"io.kubernetes.cri.container-type": "sandbox"}
SLEEP = ["/bin/busybox", "sleep", "30"]
ENV = ["PATH=/bin"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def crun_unusable() -> str | None:
    """Why crun cannot run here, or None."""
    if CRUN is None:
        return "crun is not installed (apt-get install crun)"
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            if f.read().split():
                return "crun refuses a hybrid cgroup host with controllers left on v2: run scripts/test.sh"
    except OSError:
        pass
    return None


class Result:
    def __init__(self, argv: list[str], rc: int, out: str, err: str) -> None:
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, argv={self.argv!r}, out={self.out!r}, err={self.err!r})"

    def json(self):
        return json.loads(self.out)


class Runtime:
    """One runtime binary with its own --root and --log, and the cleanup of what was created through it.

    Names: "runu" (the product: unikernels itself, every other bundle through its delegate OCI runtime),
    "runu-library" (runu without a delegate: plain bundles run by the library's own plain-process path),
    "runu+crun" (runu with plain bundles, which it hands to crun: behaves as crun does, so `is_runu` is
    False), "crun".
    """

    def __init__(self, name: str, tmp: str) -> None:
        self.name = name
        self.binary = {"runu": RUNU, "runu-library": RUNU_LIBRARY, "runu+crun": RUNU}.get(name) or CRUN
        self.tmp = tmp
        # root's parent holds nothing else of the test's: a runtime that lets an id like `..` through can only
        # do damage here
        self.root = os.path.join(tmp, "rt", "root")
        self.log = os.path.join(tmp, "runtime-log.json")
        self._children_before = set(children_of(os.getpid()))

    @property
    def is_runu(self) -> bool:
        return self.name in ("runu", "runu-library")

    def global_flags(self, log: str | None = None) -> list[str]:
        return ["--root", self.root, "--log", log or self.log, "--log-format", "json"]

    def __call__(self, *args: str, log: str | None = None, flags: list[str] | None = None, stdin=None,
                 pass_fds=(), cwd: str | None = None, timeout: float = 30, wrap: list[str] | None = None) -> Result:
        """Run `binary [global flags] args...`; `flags` replaces the global flags when given."""
        argv = [self.binary] + (self.global_flags(log) if flags is None else flags) + list(args)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run((wrap or []) + argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                               stdout=out, stderr=err, pass_fds=pass_fds, cwd=cwd, timeout=timeout)
            out.seek(0)
            err.seek(0)
            return Result(argv, p.returncode, out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"))

    def ok(self, *args: str, **kw) -> Result:
        r = self(*args, **kw)
        assert r.rc == 0, r
        return r

    def state(self, cid: str) -> dict:
        return self.ok("state", cid).json()

    def status(self, cid: str) -> str:
        return self.state(cid)["status"]

    def create(self, cid: str, bundle: str, *extra: str) -> int:
        """create with containerd's flags; the container's pid (from the pid file)."""
        pid_file = os.path.join(bundle, "init.pid")
        self.ok("create", "--bundle", bundle, "--pid-file", pid_file, *extra, cid,
                log=os.path.join(bundle, "log.json"))
        with open(pid_file) as f:
            return int(f.read())

    def ids(self) -> list[str]:
        """Every container directory under the root: runu's own and its delegate's (in DELEGATE_DIR)."""
        from runu.delegate import DELEGATE_DIR

        try:
            ids = [n for n in os.listdir(self.root) if n != DELEGATE_DIR]
        except FileNotFoundError:
            return []
        try:
            ids += os.listdir(os.path.join(self.root, DELEGATE_DIR))
        except FileNotFoundError:
            pass
        return sorted(ids)

    def cleanup(self) -> None:
        """Force-delete every container under the root, then kill and reap what is left of ours."""
        for cid in self.ids():
            try:
                self("delete", "--force", "--", cid, timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for pid in set(children_of(os.getpid())) - self._children_before:
            kill_and_reap(pid)
        if self.binary in (RUNU, RUNU_LIBRARY) and os.path.isdir(self.root):
            shutil.rmtree(self.root, ignore_errors=True)

    def new_processes(self) -> list[int]:
        """Live processes started (and orphaned to us) since this runtime was set up."""
        return sorted(set(children_of(os.getpid())) - self._children_before)


def runu(root: str, *args: str, env: dict[str, str] | None = None, log: str | None = None, timeout: float = 60,
         binary: str = RUNU, **kw) -> subprocess.CompletedProcess:
    """`runu --root ROOT ARGS` (or `binary`, e.g. RUNU_LIBRARY) to completion, output captured as text, stdin
    /dev/null; `env` defaults to conftest's `base_env()`; with `log`, a JSON `--log` file."""
    flags = ["--root", root] + (["--log", log, "--log-format", "json"] if log else [])
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else base_env(), **kw)


def kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_exit(pid, 10)


def wait_exit(pid: int, timeout: float = 10) -> int | None:
    """Reap our child `pid` (the container inits are orphaned to this subreaper); its wait status."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not exit within {timeout}s")
        time.sleep(0.005)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:][:1] not in (b"Z", b"X")


# ---- bundles -------------------------------------------------------------------------------

def make_rootfs(rootfs: str) -> None:
    """A rootfs with the static busybox, and the mount points crun needs."""
    for d in ("bin", "dev", "proc"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    dest = os.path.join(rootfs, "bin", "busybox")
    try:
        os.link(BUSYBOX, dest)
    except OSError:
        shutil.copy2(BUSYBOX, dest)
    os.symlink("busybox", os.path.join(rootfs, "bin", "sh"))


def spec(args=None, *, shared: str | None = None, hooks=None, annotations=None, namespaces=None,
         env=None) -> dict:
    """A config.json that both runu (a CRI sandbox: process.args from the rootfs) and crun run.

    `shared` is bind-mounted at the same path inside the container (runu ignores mounts and runs on the host
    filesystem), so hooks and processes of either runtime can write to it.
    """
    mounts = [{"destination": "/proc", "type": "proc", "source": "proc"},
              {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}]
    if shared:
        mounts.append({"destination": shared, "type": "bind", "source": shared, "options": ["rbind", "rw"]})
    s = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args or SLEEP),
                    "env": list(env or ENV), "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": mounts,
        "annotations": dict(SANDBOX if annotations is None else annotations),
        "linux": {"namespaces": [{"type": "mount"}, {"type": "network"}] if namespaces is None else namespaces},
    }
    if hooks:
        s["hooks"] = hooks
    return s


def write_bundle(bundle: str, config: dict | str | bytes | None, rootfs: bool = True) -> str:
    os.makedirs(bundle, exist_ok=True)
    if rootfs:
        make_rootfs(os.path.join(bundle, "rootfs"))
    if config is not None:
        data = config if isinstance(config, (str, bytes)) else json.dumps(config, indent=2)
        with open(os.path.join(bundle, "config.json"), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return bundle


# ---- errors --------------------------------------------------------------------------------

def log_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def assert_error(rt: Runtime, res: Result, words=(), *, log: str | None = None, logged_before: int = 0) -> str:
    """A failed command: exit 1, one line on stderr (for runu: `runu: MSG` naming what is wrong), one JSON
    error line appended to the --log file whose msg is the stderr message. Returns the message."""
    assert res.rc == 1, res
    lines = [ln for ln in res.err.split("\n") if ln]
    assert len(lines) == 1 and res.err.endswith("\n"), res
    msg = lines[0]
    if rt.is_runu:
        assert msg.startswith("runu: "), res
    if rt.binary in (RUNU, RUNU_LIBRARY) and msg.startswith("runu: "):  # runu+crun: runu answers an unknown id
        msg = msg[len("runu: "):]
    if rt.is_runu:
        for w in words:
            assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    new = log_lines(log or rt.log)[logged_before:]
    assert len(new) == 1, new
    entry = json.loads(new[0])
    assert entry["level"] == "error"
    assert entry["msg"] == msg
    assert RFC3339.match(entry["time"]), entry
    return msg


def assert_failed(rt: Runtime, res: Result, words=(), **kw) -> None:
    """runu: `assert_error`. crun (the reference) exits with 1, 253 or 255 and has its own wording."""
    if rt.is_runu:
        assert_error(rt, res, words, **kw)
    else:
        assert res.rc != 0 and res.err.strip(), res


# ---- schemas -------------------------------------------------------------------------------

def schema_validator(name: str):
    """A jsonschema validator for runtime-spec's schema/`name`, resolving its $refs to sibling files."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Resource:
        with open(os.path.join(SCHEMA_DIR, os.path.basename(uri.split("#")[0]))) as f:
            return Resource.from_contents(json.load(f), default_specification=DRAFT4)

    with open(os.path.join(SCHEMA_DIR, name)) as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    cls.check_schema(schema)
    return cls(schema, registry=Registry(retrieve=retrieve))
