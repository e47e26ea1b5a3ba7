"""The container's process for a unikernel: the supervisor of its VMM (an init.Supervisor).

The container init does not become the VMM: it stays its parent, so that `create` can
build the VM and `start` only lets it run (as runc's `create` does the work and `start`
releases the process). This module plugs into the init (`prepare`):

- at create, in the container's namespaces and cgroup, after the createContainer hooks:
  the guest network when the netns has one already (net.attach), then the VMM through
  its backend's `Session` (QEMU: built paused, `-S`; Firecracker: its API configured),
  waited for until it answers. A VMM that cannot come up fails `create` with its own
  words and leaves nothing. The VMM dies with the supervisor (PR_SET_PDEATHSIG), so a
  SIGKILL of the container's pid (`kill`, `delete --force`) ends both.
- at start: a network that appeared since create (CNI configured the netns late) is
  attached (Session.attach), the startContainer hooks run (the init does that), and the
  VMM resumes.
- then it waits for the VMM: signals it receives go on to the VMM, the VMM's stderr goes
  to the container's, the backend's control channel is read (QEMU's events say why a
  guest stopped), and it exits with the backend's `exit_status` of the VMM's status (or
  dies of the signal that killed the VMM), writing the backend's line about a failure
  on the container's stderr.

Standard library and this package's small modules only; pyroute2 only when a network
must be configured.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mocktainer.init import _Launch
    from mocktainer.unikraft.net import Nic

MODULE = "mocktainer.unikraft.supervisor"
# Signals the supervisor passes on to the VMM (the others keep their default action: KILL and STOP cannot be
# caught; the VMM dies with the supervisor).
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT", "SIGALRM")


def params(vmm: str, linux: bool, setup: dict[str, Any] | None = None,
           network: dict[str, Any] | None = None) -> dict[str, Any]:
    """The init configuration's `supervisor` entry: the backend `vmm`, the guest's kind, what the backend's
    Session needs beside the argv (`setup`, from vmm.Launch) and the guest network instruction (or None)."""
    return {"module": MODULE, "vmm": vmm, "linux": bool(linux), "setup": setup or {}, "network": network}


def prepare(config: dict[str, Any], launch: Any) -> Supervisor:
    """The init's plug-in entry point (see init.Supervisor): the VMM started (`ready` waits for it to answer,
    while runu records the container), to be resumed at start."""
    sup = Supervisor(config, launch)
    sup.prepare()
    return sup


def _attach_in_a_child(instr: dict[str, Any]) -> Nic | None:
    """net.attach in a short-lived child, so that pyroute2 (some 24 MiB, in the container's memory limit)
    never loads into the supervisor, which lives as long as the container. The Nic comes back as JSON on a
    socketpair, the macvtap's fd beside it (SCM_RIGHTS)."""
    import _socket
    import struct

    from mocktainer import fastjson, system
    from mocktainer.unikraft import net

    mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    parent = os.getpid()
    system.load_libc()
    pid = os.fork()
    if pid == 0:
        try:
            system.die_with_parent(parent)  # what it made is in guestnet.json: `delete` undoes it
            mine.close()
            fds: list[int] = []
            try:
                nic = net.attach(instr)
                msg: dict[str, Any] = {"nic": None if nic is None else nic.as_dict()}
                if nic is not None and nic.fd >= 0:
                    fds = [nic.fd]
            except Exception as e:
                msg = {"error": str(e) or type(e).__name__}
            rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("%di" % len(fds), *fds))] if fds else []
            theirs.sendmsg([fastjson.dumps(msg).encode()], rights)
        finally:
            os._exit(0)
    theirs.close()
    fd = -1
    try:
        data, ancillary, _flags, _addr = mine.recvmsg(1 << 16, _socket.CMSG_SPACE(struct.calcsize("i")))
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(payload) >= 4:
                fd = struct.unpack_from("i", payload)[0]
        while chunk := mine.recv(1 << 16):
            data += chunk
    finally:
        mine.close()
        os.waitpid(pid, 0)
    answer: Any
    try:
        answer = fastjson.loads(data) if data else {"error": "the guest network's helper process died"}
    except ValueError:
        answer = {"error": "the guest network's helper process answered %r" % data[:200]}
    if not isinstance(answer, dict) or "nic" not in answer:
        if fd >= 0:
            os.close(fd)
        raise net.GuestNetError(str(answer.get("error") if isinstance(answer, dict) else answer))
    if answer["nic"] is None:
        return None
    if fd >= 0:
        os.set_inheritable(fd, True)
    return net.Nic.from_dict(answer["nic"], fd)


class Supervisor:
    def __init__(self, config: dict[str, Any], launch: _Launch) -> None:
        from mocktainer.unikraft import vmm

        self.backend = vmm.backend(config["vmm"])
        self.network = config.get("network")
        self.session = self.backend.Session(launch, bool(config.get("linux")), config.get("setup") or {})
        self.nic: Nic | None = None
        self.launch = launch
        self.shares = (config.get("setup") or {}).get("shares")
        self.helpers: list[int] = []  # virtiofsd pids

    def prepare(self) -> None:
        """The shares (mounts.enter, virtiofsd), the network when there is one, and the VMM started; `ready`
        waits for it."""
        try:
            self._share_files()
        except BaseException:
            self.abort_helpers()
            raise
        self.nic = self._attach_network()
        try:
            self.session.spawn(self.nic)
        except BaseException:
            self._release_network()
            self.abort_helpers()
            raise

    def ready(self) -> None:
        try:
            self.session.ready()
        except BaseException:
            self.abort()
            raise

    def _share_files(self) -> None:
        """The mounts' private namespace (inherited by every child from here on) and, for a Linux guest, one
        virtiofsd per share, a child dying with the supervisor like the VMM."""
        if not self.shares:
            return
        from mocktainer.unikraft import mounts

        items = [mounts.Share.from_dict(d) for d in self.shares["items"]]
        state_dir = self.shares["state_dir"]
        mounts.enter(state_dir, items)
        if not self.shares.get("linux"):
            return
        for share in items:
            fd = mounts.listen(state_dir, share)
            try:
                self.helpers.append(self.launch.spawn(mounts.virtiofsd_args(state_dir, share, self.launch.fd_base),
                                                      [fd]))
            finally:
                os.close(fd)

    def _attach_network(self) -> Nic | None:
        if not self.network:
            return None
        from mocktainer.unikraft import net

        if not net.has_default_route():
            return None
        return _attach_in_a_child(self.network)

    def _release_network(self) -> None:
        if self.nic is not None:
            from mocktainer.unikraft import net

            for problem in net.release(self.nic):
                self._say(problem)
            self.nic = None

    def fds(self) -> set[int]:
        child = self.session.vmm
        out = {child.err_fd, child.pidfd} | self.session.fds()
        if self.nic is not None and self.nic.fd >= 0:
            out.add(self.nic.fd)
        return out - {-1}

    def alive(self) -> bool:
        return not self.session.vmm.exited()

    def start(self) -> None:
        child = self.session.vmm
        if child.exited():
            from mocktainer.unikraft.vmmproc import VMMError

            raise VMMError(child.failure("be started"))
        if self.nic is None:
            nic = self._attach_network()
            if nic is not None:
                self.nic = nic
                try:
                    self.session.attach(nic)
                except BaseException:
                    self._release_network()
                    raise

    def resume(self) -> None:
        self.session.resume()
        if self.nic is not None:
            self.nic.close()  # the VMM has it

    def abort(self) -> None:
        self.session.abort()
        self._release_network()
        self.abort_helpers()

    def abort_helpers(self) -> None:
        """End the virtiofsd helpers (they also die with the supervisor)."""
        from mocktainer.process import kill_quietly, reap

        for pid in self.helpers:
            kill_quietly(pid)
            reap(pid)
        self.helpers = []

    def supervise(self) -> None:
        import _signal
        import select

        session, child = self.session, self.session.vmm

        def forward(signum: int, _frame: object) -> None:
            child.signal(signum)

        for name in FORWARDED:
            _signal.signal(getattr(_signal, name), forward)
        poller = select.poll()
        control = session.control_fd
        for fd in (child.pidfd, child.err_fd, control):
            if fd >= 0:
                poller.register(fd, select.POLLIN)
        child.relay = True
        ended = False
        while not ended:
            for fd, _ev in poller.poll():
                if fd == child.pidfd:
                    ended = True
                elif fd == child.err_fd and not child.pump():
                    poller.unregister(fd)
                elif fd == control and not session.on_control():
                    poller.unregister(fd)
        status = child.reap()
        while child.pump():
            pass
        if control >= 0:
            while session.on_control():
                pass  # the last events (why it ended)
        code, message = self.backend.exit_status(status, getattr(session, "reason", None))
        if message:
            self._say(message)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            for name in FORWARDED:
                _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
            _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)  # die of the signal that killed the VMM, as if we had been it
        os._exit(code)

    @staticmethod
    def _say(message: str) -> None:
        from mocktainer.unikraft.vmmproc import to_stderr

        to_stderr(f"runu: {message}\n".encode(errors="replace"))
