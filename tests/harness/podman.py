"""A private podman (with conmon) per test, with any OCI runtime."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from .fs import remove_cgroups, remove_tree, unmount_under
from .images import normalize_ref
from .procs import (
    DEFAULT_TIMEOUT,
    HarnessError,
    all_pids,
    cmdline,
    kill_tree,
    missing_binaries,
    read_stat,
    reap_zombies,
    run_cmd,
    wait_gone,
)
from .pty import PtyProcess

# ---------------------------------------------------------------------------------------------
# podman


class Podman:
    """A private podman: own ``--root``, ``--runroot``, ``--tmpdir``, containers.conf and storage.conf.

    ``runtimes`` maps runtime names to binaries; each is registered under ``[engine.runtimes]``
    and listed in ``runtime_supports_json`` (so podman/conmon pass ``--log-format=json``).
    ``default_runtime`` (default: the first name in ``runtimes``) becomes ``engine.runtime``.
    Host settings these machines need are set: ``default_ulimits`` (no CAP_SYS_RESOURCE),
    ``cgroup_manager = "cgroupfs"``, ``events_logger = "file"``.  File locks under the private
    tmpdir (instead of the host-wide ``/libpod_lock`` shm segment) keep instances apart.
    Containers run with ``--network none`` unless told otherwise (no CNI config here), and with
    ``--cgroup-parent`` a private cgroup (conmon goes to ``<parent>/conmon``) removed at stop.
    """

    def __init__(self, runtimes: Mapping[str, str | os.PathLike] | None = None,
                 base_dir: str | os.PathLike | None = None, *, default_runtime: str | None = None,
                 storage_driver: str = "overlay", log_level: str = "warn", extra_engine: str = "",
                 cgroup_parent: str | None = None):
        self._own_base = base_dir is None
        self.base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="mocktainer-podman-"))
        self.base = self.base.resolve()
        self.runtimes = {k: os.fspath(v) for k, v in (runtimes or {}).items()}
        self.default_runtime = default_runtime or next(iter(self.runtimes), "runc")
        self.storage_driver = storage_driver
        self.log_level = log_level
        self.extra_engine = extra_engine
        self.cgroup_parent = cgroup_parent or f"/mocktainer-podman-{secrets.token_hex(4)}"
        self.root = self.base / "root"
        self.runroot = self.base / "runroot"
        self.tmpdir = self.base / "tmp"
        self.conf_path = self.base / "containers.conf"
        self.storage_conf_path = self.base / "storage.conf"
        self.registries_conf_path = self.base / "registries.conf"
        self.events_log = self.base / "events.log"
        self.env: dict[str, str] = {}
        self.started = False

    def containers_conf(self) -> str:
        q = json.dumps
        supports_json = sorted({"runc", "crun", *self.runtimes})
        lines = [
            "[containers]",
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
            'netns = "none"',
            "",
            "[network]",
            f"network_config_dir = {q(str(self.base / 'networks'))}",
            'cni_plugin_dirs = ["/usr/lib/cni"]',
            "",
            "[engine]",
            'cgroup_manager = "cgroupfs"',
            'events_logger = "file"',
            f"events_logfile_path = {q(str(self.events_log))}",
            f"tmp_dir = {q(str(self.tmpdir))}",
            f"static_dir = {q(str(self.root / 'libpod'))}",
            f"volume_path = {q(str(self.root / 'volumes'))}",
            'lock_type = "file"',
            'conmon_path = ["/usr/bin/conmon", "/usr/libexec/podman/conmon"]',
            f"runtime = {q(self.default_runtime)}",
            f"runtime_supports_json = {json.dumps(supports_json)}",
            self.extra_engine,
            "",
            "[engine.runtimes]",
        ]
        for name, binary in self.runtimes.items():
            lines.append(f"{q(name)} = [{q(binary)}]")
        return "\n".join(lines) + "\n"

    def storage_conf(self) -> str:
        q = json.dumps
        return (f"[storage]\ndriver = {q(self.storage_driver)}\nrunroot = {q(str(self.runroot))}\n"
                f"graphroot = {q(str(self.root))}\n")

    def start(self) -> "Podman":
        missing = missing_binaries("podman", "conmon")
        if missing:
            raise HarnessError(f"missing binaries: {missing}")
        try:
            for d in (self.root, self.runroot, self.tmpdir, self.base / "networks"):
                d.mkdir(parents=True, exist_ok=True)
            self.conf_path.write_text(self.containers_conf())
            self.storage_conf_path.write_text(self.storage_conf())
            self.registries_conf_path.write_text('unqualified-search-registries = []\n')
            self.env = dict(os.environ)
            self.env.update(CONTAINERS_CONF=str(self.conf_path),
                            CONTAINERS_STORAGE_CONF=str(self.storage_conf_path),
                            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf_path),
                            TMPDIR=str(self.tmpdir))
            self.env.pop("CONTAINERS_CONF_OVERRIDE", None)
            self.started = True
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> "Podman":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def podman_argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                "--tmpdir", str(self.tmpdir), "--storage-driver", self.storage_driver,
                "--log-level", self.log_level, *map(os.fspath, args)]

    def podman(self, *args: str, timeout: float = DEFAULT_TIMEOUT, check: bool = False,
               input: str | None = None) -> subprocess.CompletedProcess:
        """``podman <private globals> ARGS...`` with the private environment and a timeout."""
        return run_cmd(self.podman_argv(*args), timeout=timeout, check=check, input=input,
                       env=self.env)

    def spawn_pty(self, *args: str) -> PtyProcess:
        """``podman ARGS...`` on a fresh pty (for ``run -t``/``-it``)."""
        return PtyProcess(self.podman_argv(*args), env=self.env)

    def load(self, tar: str | os.PathLike, ref: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Load an OCI archive made by :func:`build_image`; return the image name podman knows."""
        ref = normalize_ref(ref)
        self.podman("load", "-q", "-i", os.fspath(tar), timeout=timeout, check=True)
        if self.podman("image", "exists", ref, timeout=timeout).returncode != 0:
            images = self.podman("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
                                 timeout=timeout).stdout
            raise HarnessError(f"podman load of {tar} did not create {ref}; images:\n{images}")
        return ref

    def run_argv(self, image: str, *args: str, runtime: str | None = None, rm: bool = True,
                 detach: bool = False, tty: bool = False, interactive: bool = False,
                 name: str | None = None, network: str | None = "none",
                 annotations: Mapping[str, str] | None = None, extra: Sequence[str] = ()) -> list[str]:
        argv = ["run", "--pull", "never"]
        if runtime:
            argv += ["--runtime", runtime]
        if rm:
            argv += ["--rm"]
        if detach:
            argv += ["--detach"]
        if tty:
            argv += ["--tty"]
        if interactive:
            argv += ["--interactive"]
        if name:
            argv += ["--name", name]
        if network:
            argv += ["--network", network]
        if self.cgroup_parent:
            argv += ["--cgroup-parent", self.cgroup_parent]
        for k, v in (annotations or {}).items():
            argv += ["--annotation", f"{k}={v}"]
        return [*argv, *extra, image, *args]

    def run(self, image: str, *args: str, runtime: str | None = None, rm: bool = True,
            detach: bool = False, tty: bool = False, name: str | None = None,
            network: str | None = "none", annotations: Mapping[str, str] | None = None,
            extra: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT, check: bool = False
            ) -> subprocess.CompletedProcess | PtyProcess:
        """``podman run --pull never [--runtime NAME] [--rm] [-d] [-t] IMAGE ARGS...``.

        With ``tty`` returns a started :class:`PtyProcess` (run with ``-it``), otherwise the
        CompletedProcess (``detach``: stdout is the container id).
        """
        argv = self.run_argv(image, *args, runtime=runtime, rm=rm, detach=detach, tty=tty,
                             interactive=tty, name=name, network=network, annotations=annotations,
                             extra=extra)
        if tty:
            return self.spawn_pty(*argv)
        return self.podman(*argv, timeout=timeout, check=check)

    def conmon_pids(self) -> list[int]:
        """conmon processes started for this podman (their command line names our directories)."""
        pids = []
        marker = str(self.base) + "/"
        for pid in all_pids():
            argv = cmdline(pid)
            if argv and os.path.basename(argv[0]) == "conmon" and any(marker in a for a in argv):
                st = read_stat(pid)
                if st and st[0] not in "ZX":
                    pids.append(pid)
        return pids

    def stop(self) -> None:
        """``podman rm -af``, wait for (then kill) its conmon processes and their children,
        unmount and remove the private directories.  Safe to call twice."""
        problems = []
        if self.started:
            self.started = False
            try:
                res = self.podman("rm", "--all", "--force", "--time", "0", timeout=60)
                if res.returncode != 0:
                    problems.append(f"podman rm -af: {res.stderr.strip()}")
            except subprocess.TimeoutExpired as e:
                problems.append(f"podman rm -af timed out: {e.stderr}")
            # conmon runs `podman container cleanup` after the container exits; let it finish
            wait_gone(self.conmon_pids(), 5)
            for pid in self.conmon_pids():
                kill_tree(pid)
            try:
                self.podman("image", "rm", "--all", "--force", timeout=60)
            except subprocess.TimeoutExpired:
                pass
        reap_zombies()
        if self.base.exists():
            left = unmount_under(self.base)
            if left:
                problems.append(f"still mounted: {left}")
        if self.cgroup_parent:
            left = remove_cgroups(self.cgroup_parent)
            if left:
                problems.append(f"cgroups still in use: {left}")
        if self._own_base and not problems:
            remove_tree(self.base)
        if problems:
            raise HarnessError("podman cleanup incomplete: " + "; ".join(problems))
