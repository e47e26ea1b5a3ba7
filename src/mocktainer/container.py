"""A container: its directory under the root, its saved state and its lifecycle.

    create() ──start(process)──> CREATED ──exec()──> RUNNING ──(process ends)──> STOPPED
                                   └────────────── destroy() ─────────────────────┘
"""

from __future__ import annotations

import os

from . import system
from . import state as statefile
from .configs import Config
from .error import Error, NotRunningError, RunningError
from .process import InitProcess, Process, alive, kill_quietly, reap
from .state import EXEC_FIFO, State, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.0.2"


class Container:
    def __init__(self, root: str, id: str, config: Config, state: State | None = None) -> None:
        self._root = root
        self._id = id
        self._config = config
        self._state = state
        self._init: InitProcess | None = None
        self._cgroup_paths: dict[str, str] = {}

    @property
    def id(self) -> str:
        return self._id

    @property
    def config(self) -> Config:
        return self._config

    @property
    def dir(self) -> str:
        return os.path.join(self._root, self._id)

    @property
    def fifo_path(self) -> str:
        return os.path.join(self.dir, EXEC_FIFO)

    # ---- status -------------------------------------------------------------------------

    def status(self) -> Status:
        st = self._state
        if st is None or not st.init_process_pid:
            return Status.STOPPED
        if not alive(st.init_process_pid, st.init_process_start):
            return Status.STOPPED
        if not st.created:
            return Status.CREATING  # the create flow is still running (or its caller died mid-way)
        if os.path.exists(self.fifo_path) and system.proc_comm(st.init_process_pid) == system.INIT_COMM:
            return Status.CREATED
        return Status.RUNNING

    def state(self) -> State:
        if self._state is None:
            return State(id=self._id, config=self._config)
        return State.from_dict(self._state.to_dict())

    def oci_state(self, status: Status | None = None) -> dict[str, Any]:
        """The runtime-spec state object, as hooks and `runu state` show it."""
        status = status or self.status()
        pid = self._state.init_process_pid if self._state else 0
        return {
            "ociVersion": self._config.version or OCI_VERSION,
            "id": self._id,
            "status": str(status),
            "pid": pid if status != Status.STOPPED else 0,
            "bundle": self._config.label("bundle") or "",
            "annotations": self._config.annotations(),
        }

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, process: Process) -> None:
        """Spawn the init and run the create flow; on return the container is CREATED."""
        if self._state is not None and self.status() != Status.STOPPED:
            raise Error(f"container {self._id!r} already has an init process")
        if not process.init:
            raise Error("only the container's init process can be started; exec of extra processes is not supported")
        from . import failpoint  # not on the path of `state` and `kill`

        self._make_fifo()
        init = InitProcess(process, self.fifo_path)
        self._init = init
        self._cgroup_paths = {}
        try:
            init.spawn()
            failpoint.hit("create:init")
            init.bootstrap(self._config.namespaces.clone_flags(), self._ns_paths_to_join())
            failpoint.hit("create:bootstrap")
            # While the init sets up its namespaces (the slow part of its start), put it into its cgroup
            # (the kernel's slow part of ours). It runs nothing of the container's before it has its
            # configuration, so hooks and the VMM it becomes are all inside. The init and the cgroup are
            # recorded first ("creating"): if this process is killed from here on, `delete` finds both.
            from . import cgroups

            c = self._config
            host = cgroups.Host.current()
            name = cgroups.default_name(self._root, self._id)  # the same id in another root: another cgroup
            planned = cgroups.plan(name, c.cgroups_path, c.systemd_cgroup, host, c.cgroup_parent)
            self._save_creating(init, planned)
            failpoint.hit("create:creating")
            self._cgroup_paths = cgroups.create(name, c.cgroups_path, c.systemd_cgroup, c.resources, init.pid,
                                                host, planned, c.cgroup_parent)
            failpoint.hit("create:cgroup")
            init.send_config(self._init_config(process))
            init.converse(on_hooks=self._run_parent_hooks, on_ready=self._record_created)
        except BaseException:
            init.close()
            init.kill()
            self._remove_cgroup_quietly()
            self._remove_run_files()
            self._state = None
            # A failed create ends as if destroyed (runtime spec, lifecycle steps 12-13).
            self._warn_hooks("poststop", Status.STOPPED)
            raise
        init.close()

    def exec(self) -> None:
        """Release a CREATED container's init so it execs the process: RUNNING."""
        fifo = self.fifo_path
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Error(f"container {self._id!r} is not in created state: it cannot be started") from None
        from . import failpoint

        failpoint.hit("start:fifo")
        try:
            self._await_fifo(fd)
        finally:
            os.close(fd)
            try:
                os.unlink(fifo)
            except FileNotFoundError:
                pass
        self._warn_hooks("poststart", Status.RUNNING)

    def pids(self, stopped_too: bool = False, status: Status | None = None) -> list[int]:
        """The container's processes, the init first: from its cgroup when it has one, else the init and its
        descendants (/proc). A stopped container has none, or with `stopped_too` what is left in its cgroup.
        `status`: the caller's answer of status(), when it has one."""
        st = self.state()
        stopped = (status or self.status()) == Status.STOPPED
        if stopped and not (stopped_too and st.cgroup_paths):
            return []
        if st.cgroup_paths:
            from . import cgroups

            pids = cgroups.pids(st.cgroup_paths)
            if stopped:
                return sorted(pids or [])  # never the dead init's pid: it may belong to someone else by now
            if pids is not None:
                init = st.init_process_pid
                return [init] + sorted(p for p in pids if p != init)
        from .process import descendants

        return descendants(st.init_process_pid)

    def signal(self, sig: int, all: bool = False) -> None:
        """Signal the init; with `all`, every process of the container, and a stopped container is no error
        (its init is gone, but its cgroup may still hold processes: runc signals them too)."""
        if all:
            for pid in self.pids(stopped_too=True):
                kill_quietly(pid, sig)
            return
        status = self.status()
        if status == Status.STOPPED:
            raise NotRunningError(f"container {self._id!r} is not running")
        assert self._state is not None
        pid, start = self._state.init_process_pid, self._state.init_process_start
        # Through a pidfd taken before the start time is checked again, so that a pid reused since the
        # status check is never signalled.
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise NotRunningError(f"container {self._id!r} is not running") from None
        except OSError:
            pidfd = -1  # a kernel without pidfds (< 5.3)
        try:
            if not alive(pid, start):
                raise NotRunningError(f"container {self._id!r} is not running")
            if pidfd >= 0:
                import _signal  # `signal` itself would load enum on every `runu kill`

                _signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            raise NotRunningError(f"container {self._id!r} is not running") from None
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def destroy(self, status: Status | None = None) -> None:
        """Remove a CREATED (killing its init) or STOPPED container; refuse a RUNNING one.
        `status`: the caller's answer of status(), when it has one."""
        status = status or self.status()
        if status == Status.RUNNING:
            raise RunningError(f"container {self._id!r} is running; stop it before destroying it")
        if status == Status.CREATED:
            assert self._state is not None
            pid, start = self._state.init_process_pid, self._state.init_process_start
            kill_quietly(pid)
            reap(pid, start)
        if self._state is not None and self._state.cgroup_paths:
            # After the init is gone; a cgroup still holding processes is an error and keeps the state, so
            # that a later delete (runu delete kills what is left in it) can finish the job.
            from . import cgroups

            cgroups.remove(self._state.cgroup_paths, self._default_cgroup_parent())
        existed = os.path.isdir(self.dir)
        _remove_dir(self.dir)
        if existed and self._state is not None:
            self._warn_hooks("poststop", Status.STOPPED)
        self._state = None

    # ---- internals ----------------------------------------------------------------------

    def _make_fifo(self) -> None:
        self._remove_run_files()
        try:
            os.mkfifo(self.fifo_path, 0o622)
            os.chmod(self.fifo_path, 0o622)  # mkfifo's mode is filtered through the umask
        except OSError as e:
            from .error import StateError

            raise StateError(f"cannot make {self.fifo_path}: {e.strerror}") from None

    def _remove_run_files(self) -> None:
        for name in (EXEC_FIFO, statefile.STATE_FILE, statefile.RECOVERY_FILE):
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass

    def _default_cgroup_parent(self) -> str | None:
        """The parent directory name of the default cgroup path (pruned when left empty), or None."""
        if self._config.cgroups_path or self._config.systemd_cgroup:
            return None
        from .cgroups import DEFAULT_PARENT

        return self._config.cgroup_parent or DEFAULT_PARENT

    def _remove_cgroup_quietly(self) -> None:
        """Undo cgroups.create after a failed start (the init is dead and reaped)."""
        paths, self._cgroup_paths = self._cgroup_paths, {}
        if paths:
            from . import cgroups

            try:
                cgroups.remove(paths, self._default_cgroup_parent())
            except Error as e:
                from .error import warn

                warn(str(e))

    def _ns_paths_to_join(self) -> dict[str, str]:
        return {ns.proc_file(): ns.path for ns in self._config.namespaces if ns.path}

    def _init_config(self, process: Process) -> dict[str, Any]:
        config = self._config.to_dict()
        if process.apparmor_profile:
            config["apparmor_profile"] = process.apparmor_profile
        if process.label:
            config["process_label"] = process.label
        base = self.oci_state(Status("creating"))
        del base["status"], base["pid"]
        return {
            "id": self._id,
            "args": process.args,
            "env": process.env,
            "config": config,
            "state": base,
            "extra_files": len(process.extra_files),
            "log_level": process.log_level,
            "terminal": process.terminal,
            "no_new_privs": process.no_new_privs,
            "parent_pid": os.getpid(),
            "supervisor": process.supervisor,
        }

    def _hook_state(self, status: str) -> dict[str, Any]:
        st = self.oci_state(Status.STOPPED)
        st["status"] = status
        if self._init is not None and self._init.pid:
            st["pid"] = self._init.pid
        elif self._state is not None:
            st["pid"] = self._state.init_process_pid
        return st

    def _run_parent_hooks(self) -> None:
        st = self._hook_state("creating")
        self._config.hooks.run("prestart", st)
        self._config.hooks.run("createRuntime", st)

    def _save_creating(self, init: InitProcess, cgroup_paths: dict[str, str]) -> None:
        """state.json without `created`: status "creating", and what `delete` must undo if we die now."""
        st = State(id=self._id, init_process_pid=init.pid, init_process_start=init.start_time, config=self._config,
                   cgroup_paths=cgroup_paths)
        statefile.save(self.dir, st, statefile.RECOVERY_FILE)
        statefile.save(self.dir, st)

    def _record_created(self) -> None:
        from . import failpoint
        from .state import now_rfc3339

        init = self._init
        assert init is not None
        paths = {}
        for ns in self._config.namespaces:
            paths[ns.type] = ns.path or ns.get_path(init.pid)
        self._state = State(
            id=self._id,
            init_process_pid=init.pid,
            init_process_start=init.start_time,
            created=now_rfc3339(),
            config=self._config,
            namespace_paths=paths,
            cgroup_paths=self._cgroup_paths,
        )
        statefile.save(self.dir, self._state)
        failpoint.hit("create:state")

    def _await_fifo(self, fd: int) -> None:
        assert self._state is not None
        pid, start = self._state.init_process_pid, self._state.init_process_start
        import select  # an extension module (a dlopen): only `start` waits on anything

        from . import failpoint

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        got = b""
        while True:
            if poller.poll(100):
                data = os.read(fd, 4096)
                if data:
                    got += data  # "0": the init runs startContainer hooks, then execs
                    failpoint.hit("start:exec")
                    continue
                break  # end-of-file: the init's close-on-exec write end is gone
            if not alive(pid, start):
                break
        if not got:
            raise Error(f"container {self._id!r}: the init process died before it could be started")
        if len(got) > 1:
            raise Error(f"container {self._id!r} failed to start: {got[1:].decode(errors='replace')}")

    def _warn_hooks(self, name: str, status: Status) -> None:
        """poststart and poststop failures are warnings, as the runtime spec asks."""
        if self._config.hooks.get(name):
            self._config.hooks.run_warn(name, self._hook_state(str(status)))


def _remove_dir(path: str) -> None:
    """rmtree for our own small directories, without importing shutil."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            _remove_dir(e.path)
        else:
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
