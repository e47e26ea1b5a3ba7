"""A private containerd (with ctr) per test, and the ctr task helpers."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from .fs import remove_cgroups, remove_tree, unmount_under
from .procs import (
    CONTAINERD_START_TIMEOUT,
    DEFAULT_TIMEOUT,
    HarnessError,
    all_pids,
    cmdline,
    eventually,
    kill_tree,
    missing_binaries,
    processes_mentioning,
    read_stat,
    reap_zombies,
    run_cmd,
    unique_id,
)
from .pty import PtyProcess

# ---------------------------------------------------------------------------------------------
# containerd

CRI_NAMESPACE = "k8s.io"
"""The containerd namespace the CRI plugin keeps its images, sandboxes and containers in."""


class Containerd:
    """A private containerd: own config, root, state dir and socket under a temporary directory.

    Use as a context manager (or ``start()``/``stop()``).  Nothing it uses collides with a system
    containerd or another instance: the socket, root, state, runtime (``--runc-root``) and fifo
    directories are all below ``base_dir``, and the default namespace is unique per instance (it
    also names the cgroups ``ctr run`` creates: ``/<namespace>/<id>``).

    ``cri=True`` keeps the CRI plugin loaded (with ``restrict_oom_score_adj = true``, its CNI conf
    dir private and empty); ``runtimes={"name": "/path/to/binary"}`` registers CRI runtime handlers
    (``io.containerd.runc.v2`` with ``BinaryName``) for later CRI tests.  ``extra_config`` is TOML
    appended verbatim.

    CRI extras: ``sandbox_image`` is the CRI ``sandbox_image`` (import it into :data:`CRI_NAMESPACE`
    so nothing is pulled); ``runtime_annotations`` (patterns such as ``"org.unikraft.runu.*"``) become
    ``pod_annotations`` and ``container_annotations`` of every runtime in ``runtimes``, so those pod and
    container annotations reach the OCI spec; CNI configurations go into :attr:`cni_conf_dir`
    (:meth:`write_cni_conflist`).  ``netns`` (a name under ``/run/netns`` or a path) starts containerd
    in that network namespace (``nsenter --net``; mounts stay shared with the caller), so the host side
    of what CNI plugins create (bridges, veth ends) lives there; its ``lo`` must be up for the CRI
    stream server to listen on 127.0.0.1.
    """

    def __init__(self, base_dir: str | os.PathLike | None = None, *, namespace: str | None = None,
                 cri: bool = True, runtimes: Mapping[str, str] | None = None,
                 snapshotter: str = "overlayfs", log_level: str = "info",
                 extra_config: str = "", start_timeout: float = CONTAINERD_START_TIMEOUT,
                 sandbox_image: str | None = None, runtime_annotations: Sequence[str] = (),
                 netns: str | None = None):
        self._own_base = base_dir is None
        self.base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="mocktainer-ctrd-"))
        self.base = self.base.resolve()
        self.namespace = namespace or f"mt-{secrets.token_hex(4)}"
        self.cri = cri
        self.runtimes = dict(runtimes or {})
        self.snapshotter = snapshotter
        self.log_level = log_level
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.sandbox_image = sandbox_image
        self.runtime_annotations = list(runtime_annotations)
        self.netns = netns
        self.cni_conf_dir = self.base / "cni" / "net.d"
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.address = str(self.base / "containerd.sock")
        self.runtime_root = self.base / "runtime-root"
        self.fifo_dir = self.base / "fifo"
        self.task_log_dir = self.base / "logs"
        self.config_path = self.base / "config.toml"
        self.log_path = self.base / "containerd.log"
        self.proc: subprocess.Popen | None = None
        self._namespaces = {self.namespace}
        self._log_file = None

    # -- lifecycle ------------------------------------------------------------------------------

    def config_toml(self) -> str:
        q = json.dumps  # TOML basic strings accept JSON string escapes for our paths
        lines = [
            "version = 2",
            f"root = {q(str(self.root))}",
            f"state = {q(str(self.state))}",
            "oom_score = 0",
        ]
        if not self.cri:
            lines.append('disabled_plugins = ["io.containerd.grpc.v1.cri"]')
        lines += [
            "",
            "[grpc]",
            f"  address = {q(self.address)}",
            "",
            "[ttrpc]",
            f"  address = {q(self.address + '.ttrpc')}",
            "",
            "[debug]",
            '  address = ""',
            f"  level = {q(self.log_level)}",
            "",
            "[metrics]",
            '  address = ""',
            "",
        ]
        lines += [
            "[plugins]",
            '  [plugins."io.containerd.internal.v1.opt"]',
            f"    path = {q(str(self.base / 'opt'))}",
        ]
        if self.cri:
            cri = 'plugins."io.containerd.grpc.v1.cri"'
            lines += [
                f"  [{cri}]",
                "    restrict_oom_score_adj = true",
                '    stream_server_address = "127.0.0.1"',
                '    stream_server_port = "0"',
                "    enable_selinux = false",
            ]
            if self.sandbox_image:
                lines.append(f"    sandbox_image = {q(self.sandbox_image)}")
            lines += [
                f"  [{cri}.cni]",
                '    bin_dir = "/usr/lib/cni"',
                f"    conf_dir = {q(str(self.cni_conf_dir))}",
                f"  [{cri}.containerd]",
                f"    snapshotter = {q(self.snapshotter)}",
                '    default_runtime_name = "runc"',
                f"    [{cri}.containerd.runtimes.runc]",
                '      runtime_type = "io.containerd.runc.v2"',
                f"      [{cri}.containerd.runtimes.runc.options]",
                f"        Root = {q(str(self.runtime_root))}",
            ]
            for name, binary in self.runtimes.items():
                lines += [
                    f"    [{cri}.containerd.runtimes.{q(name)}]",
                    '      runtime_type = "io.containerd.runc.v2"',
                ]
                if self.runtime_annotations:
                    lines += [f"      pod_annotations = {json.dumps(self.runtime_annotations)}",
                              f"      container_annotations = {json.dumps(self.runtime_annotations)}"]
                lines += [
                    f"      [{cri}.containerd.runtimes.{q(name)}.options]",
                    f"        BinaryName = {q(os.fspath(binary))}",
                    f"        Root = {q(str(self.runtime_root))}",
                ]
        return "\n".join(lines) + "\n" + self.extra_config + "\n"

    def start(self) -> "Containerd":
        if self.proc is not None:
            raise HarnessError("containerd already started")
        missing = missing_binaries("containerd", "ctr", "containerd-shim-runc-v2")
        if missing:
            raise HarnessError(f"missing binaries: {missing}")
        try:
            for d in (self.root, self.state, self.runtime_root, self.fifo_dir, self.task_log_dir,
                      self.cni_conf_dir, self.base / "opt"):
                d.mkdir(parents=True, exist_ok=True)
            os.chmod(self.base, 0o711)
            self.config_path.write_text(self.config_toml())
            self._log_file = open(self.log_path, "ab")
            argv = ["containerd", "--config", str(self.config_path)]
            if self.netns is not None:
                path = self.netns if os.path.isabs(self.netns) else os.path.join("/run/netns", self.netns)
                if not os.path.exists(path):
                    raise HarnessError(f"no network namespace {path}")
                argv = ["nsenter", f"--net={path}", "--", *argv]  # nsenter execs containerd: same pid
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.address):
                try:
                    last = run_cmd(["ctr", "--address", self.address, "version"], timeout=5)
                    if last.returncode == 0:
                        return
                except subprocess.TimeoutExpired:
                    pass
            time.sleep(0.05)
        raise HarnessError(f"containerd did not answer on {self.address} within {self.start_timeout}s"
                           f" ({last.stderr if last else 'no socket'}):\n{self.log_tail()}")

    def __enter__(self) -> "Containerd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def write_cni_conflist(self, conflist: Mapping, name: str | None = None) -> Path:
        """Write a CNI network configuration list (``{"cniVersion", "name", "plugins": [...]}``) into
        :attr:`cni_conf_dir` as ``10-<name>.conflist``; the CRI plugin loads it at start and reloads
        the directory when it changes.  Returns the file's path."""
        name = name or str(conflist["name"])
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        path = self.cni_conf_dir / f"10-{name}.conflist"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(conflist, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop containerd and undo everything it left: tasks, shims (and their children),
        mounts, shim sockets, cgroups, the temporary directory.  Safe to call twice.

        The cgroups go even when an earlier step raises: the runtime makes ``/<namespace>/<id>`` in
        each hierarchy it joins and its delete removes only ``<id>``; ``/<namespace>`` is ours."""
        problems = []
        try:
            self._stop_processes(problems)
        finally:
            for ns in self._namespaces:
                left = remove_cgroups(ns)
                if left:
                    problems.append(f"cgroups still in use: {left}")
        reap_zombies()
        if self._own_base and not problems:
            remove_tree(self.base)
        if problems:
            raise HarnessError("containerd cleanup incomplete: " + "; ".join(problems))

    def _stop_processes(self, problems: list[str]) -> None:
        """Tasks, containerd, shims and their children, shim sockets, mounts; what failed goes to ``problems``."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._remove_all_tasks()
            except Exception as e:  # best effort; forced cleanup follows
                problems.append(f"task cleanup: {e}")
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for shim in self.shim_pids():
            kill_tree(shim)
        for sock in self._shim_sockets():
            try:
                os.unlink(sock)
            except OSError:
                pass
        if self.base.exists():
            left = unmount_under(self.base)
            if left:
                problems.append(f"still mounted: {left}")

    def _remove_all_tasks(self) -> None:
        for ns in self.ctr("namespaces", "ls", "-q", timeout=10).stdout.split():
            self._namespaces.add(ns)
            for task in self.ctr("task", "ls", "-q", namespace=ns, timeout=10).stdout.split():
                self.ctr("task", "kill", "-a", "-s", "SIGKILL", task, namespace=ns, timeout=10)
                self.ctr("task", "delete", "-f", task, namespace=ns, timeout=15)
            for c in self.ctr("container", "ls", "-q", namespace=ns, timeout=10).stdout.split():
                self.ctr("container", "rm", c, namespace=ns, timeout=15)

    @property
    def runtime_state_dir(self) -> Path:
        """The runtime's --root: the shim appends the namespace to its Root (``--runc-root``)."""
        return self.runtime_root / self.namespace

    def shim_pids(self) -> list[int]:
        """Pids of containerd-shim processes serving this containerd (matched by ``-address``)."""
        pids = []
        for pid in all_pids():
            argv = cmdline(pid)
            if not argv or not os.path.basename(argv[0]).startswith("containerd-shim"):
                continue
            if any(a == "-address" and i + 1 < len(argv) and argv[i + 1] == self.address
                   for i, a in enumerate(argv)):
                st = read_stat(pid)
                if st and st[0] not in "ZX":
                    pids.append(pid)
        return pids

    def _shim_sockets(self) -> list[str]:
        """Socket files of this containerd's shims (from each bundle's ``address`` file, and the
        containerd 1.6 naming ``/run/containerd/s/sha256(address/ns/id)``)."""
        socks = set()
        task_dir = self.state / "io.containerd.runtime.v2.task"
        if task_dir.is_dir():
            for addr_file in task_dir.glob("*/*/address"):
                try:
                    addr = addr_file.read_text().strip()
                except OSError:
                    continue
                if addr.startswith("unix://"):
                    socks.add(addr[len("unix://"):])
                ns, cid = addr_file.parent.parent.name, addr_file.parent.name
                digest = hashlib.sha256(os.path.join(self.address, ns, cid).encode()).hexdigest()
                socks.add(f"/run/containerd/s/{digest}")
        return sorted(socks)

    # -- ctr ------------------------------------------------------------------------------------

    def ctr_argv(self, *args: str, namespace: str | None = None) -> list[str]:
        ns = namespace or self.namespace
        self._namespaces.add(ns)
        return ["ctr", "--address", self.address, "--namespace", ns, *map(os.fspath, args)]

    def ctr(self, *args: str, namespace: str | None = None, timeout: float = DEFAULT_TIMEOUT,
            check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
        """``ctr --address SOCK --namespace NS ARGS...`` with a timeout; returns CompletedProcess."""
        return run_cmd(self.ctr_argv(*args, namespace=namespace), timeout=timeout, check=check,
                       input=input)

    def task_log(self, container_id: str) -> str:
        """What a detached ``ctr_run`` container wrote (stdout and stderr)."""
        try:
            return (self.task_log_dir / f"{container_id}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def ctr_run_argv(containerd: Containerd, image: str, container_id: str, runtime_binary: str | os.PathLike,
                 *args: str, rm: bool = True, detach: bool = False, tty: bool = False,
                 runtime_root: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None, log_uri: str | None = None,
                 null_io: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """The argv of ``ctr run`` (see :func:`ctr_run`)."""
    argv = ["run", "--runc-binary", os.fspath(runtime_binary)]
    root = containerd.runtime_root if runtime_root is None else runtime_root
    if root != "":  # "" = let the shim use its default, /run/containerd/runc/<namespace>
        argv += ["--runc-root", os.fspath(root)]
    argv += ["--fifo-dir", str(containerd.fifo_dir)]
    if detach:
        argv += ["--detach"]
        if log_uri is None and not null_io and not tty:
            log_uri = f"file://{containerd.task_log_dir / (container_id + '.log')}"
    elif rm:
        argv += ["--rm"]
    if tty:
        argv += ["--tty"]
    if null_io:
        argv += ["--null-io"]
    if log_uri:
        argv += ["--log-uri", log_uri]
    for k, v in (env or {}).items():
        argv += ["--env", f"{k}={v}"]
    for k, v in (annotations or {}).items():
        argv += ["--annotation", f"{k}={v}"]
    argv += [*extra, image, container_id, *args]
    return containerd.ctr_argv(*argv)


def ctr_run(containerd: Containerd, image: str, container_id: str, runtime_binary: str | os.PathLike,
            *args: str, rm: bool = True, detach: bool = False, tty: bool = False,
            runtime_root: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
            annotations: Mapping[str, str] | None = None, log_uri: str | None = None,
            null_io: bool = False, extra: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT,
            check: bool = False) -> subprocess.CompletedProcess | PtyProcess:
    """``ctr run --runc-binary RUNTIME_BINARY [--rm|-d] [-t] IMAGE ID ARGS...``.

    Without ``tty`` returns the CompletedProcess (``detach`` returns once the task started;
    its output goes to ``containerd.task_log(id)`` unless ``log_uri``/``null_io`` is given).
    With ``tty`` returns a started :class:`PtyProcess` (``ctr run -t`` needs a terminal):
    read with ``read_until()``, type with ``send()``, then ``wait()`` and ``close()``.
    ``runtime_root`` defaults to a directory under the containerd base (passed as
    ``--runc-root``); ``""`` keeps the shim's default ``/run/containerd/runc/<namespace>``.
    ``rm`` is ignored when ``detach`` is set (ctr refuses both).
    """
    argv = ctr_run_argv(containerd, image, container_id, runtime_binary, *args, rm=rm, detach=detach,
                        tty=tty, runtime_root=runtime_root, env=env, annotations=annotations,
                        log_uri=log_uri, null_io=null_io, extra=extra)
    if tty:
        return PtyProcess(argv)
    return run_cmd(argv, timeout=timeout, check=check)


def task_kill(containerd: Containerd, container_id: str, sig: str | int = "SIGTERM", *,
              all: bool = False, timeout: float = DEFAULT_TIMEOUT, check: bool = False
              ) -> subprocess.CompletedProcess:
    """``ctr task kill [--all] -s SIG ID``."""
    if isinstance(sig, int):
        sig = signal.Signals(sig).name
    args = ["task", "kill", "-s", sig] + (["--all"] if all else []) + [container_id]
    return containerd.ctr(*args, timeout=timeout, check=check)


def task_delete(containerd: Containerd, container_id: str, *, force: bool = False,
                timeout: float = DEFAULT_TIMEOUT, check: bool = False) -> subprocess.CompletedProcess:
    """``ctr task delete [--force] ID``."""
    args = ["task", "delete"] + (["--force"] if force else []) + [container_id]
    return containerd.ctr(*args, timeout=timeout, check=check)


def task_ps(containerd: Containerd, container_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> list[int]:
    """Pids of ``ctr task ps ID`` (raises :class:`CommandError` on failure)."""
    out = containerd.ctr("task", "ps", container_id, timeout=timeout, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[1:] if line.split()]


def task_ls(containerd: Containerd, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, dict]:
    """``ctr task ls`` as ``{id: {"pid": int, "status": "RUNNING"|"STOPPED"|...}}``."""
    out = containerd.ctr("task", "ls", timeout=timeout, check=True).stdout
    tasks = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            tasks[parts[0]] = {"pid": int(parts[1]), "status": parts[2]}
    return tasks


def wait_task_status(containerd: Containerd, container_id: str, status: str | None,
                     timeout: float = 20.0) -> dict | None:
    """Poll ``ctr task ls`` until the task has ``status`` (``None`` = the task is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        task = task_ls(containerd).get(container_id)
        if (task is None and status is None) or (task is not None and task["status"] == status):
            return task
        if time.monotonic() >= deadline:
            raise TimeoutError(f"task {container_id} is {task} after {timeout}s, wanted {status}")
        time.sleep(0.05)


def container_rm(containerd: Containerd, container_id: str, *, timeout: float = DEFAULT_TIMEOUT,
                 check: bool = False) -> subprocess.CompletedProcess:
    """``ctr container rm ID`` (also removes its snapshot)."""
    return containerd.ctr("container", "rm", container_id, timeout=timeout, check=check)


def ctr_cleanup(containerd: Containerd, container_id: str, timeout: float = 15.0) -> None:
    """Best effort: SIGKILL the task, delete it, remove the container.  Never raises on failure."""
    try:
        if container_id in task_ls(containerd, timeout=timeout):
            task_kill(containerd, container_id, "SIGKILL", all=True, timeout=timeout)
            try:
                wait_task_status(containerd, container_id, "STOPPED", timeout=timeout)
            except TimeoutError:
                pass
            task_delete(containerd, container_id, force=True, timeout=timeout)
        container_rm(containerd, container_id, timeout=timeout)
    except (subprocess.SubprocessError, OSError, TimeoutError):
        pass
    reap_zombies()


class CtrIds:
    """Container ids a test hands out (``ids("prefix")``); ``finish()`` cleans each up, then checks that
    the containerd left nothing: no task, no shim, no VMM below its directory, no runtime state."""

    def __init__(self, containerd: Containerd) -> None:
        self.containerd = containerd
        self.ids: list[str] = []

    def __call__(self, prefix: str) -> str:
        self.ids.append(unique_id(prefix))
        return self.ids[-1]

    def finish(self) -> None:
        cd = self.containerd
        for cid in self.ids:
            ctr_cleanup(cd, cid)
        eventually("containerd tasks left", lambda: task_ls(cd))
        eventually("shims left", cd.shim_pids)
        eventually("VMM processes left",
                   lambda: processes_mentioning(str(cd.base) + "/", names=["qemu-system", "firecracker"]))
        root = cd.runtime_state_dir
        eventually(f"runtime state left in {root}", lambda: runtime_state_left(root))


def runtime_state_left(root: Path) -> list[str]:
    """Container directories in a runu root: runu's own and its delegate OCI runtime's (in ``@delegate``)."""
    if not root.is_dir():
        return []
    delegated = root / "@delegate"
    return ([n for n in os.listdir(root) if n != "@delegate"]
            + (["@delegate/" + n for n in os.listdir(delegated)] if delegated.is_dir() else []))
