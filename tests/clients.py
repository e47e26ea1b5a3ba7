"""Drive real container clients (containerd + ctr, podman + conmon) against any OCI runtime binary.

Standard library only.  Everything here is meant for tests that run as root on a Debian 12 host with
the Debian packages containerd, runc, crun, podman, conmon, umoci and busybox-static installed.
The runtime under test is always just a path (``runtime_binary``), so the same helpers prove
themselves with ``/usr/sbin/runc`` and later drive ``runu``.

Overview::

    become_subreaper()                         # once per test process: orphans (shims, conmon) come to us
    rootfs = busybox_rootfs(tmp / "rootfs")
    tar = build_image(rootfs, "localhost/bb:latest", cmd=["echo", "hi"], dest=tmp / "bb.tar")
    with Containerd() as cd:
        ref = import_image(cd, tar, "localhost/bb:latest")
        res = ctr_run(cd, ref, "c1", "/usr/sbin/runc", "echo", "hello")
    with Podman({"myrt": "/usr/sbin/runc"}) as pm:
        ref = pm.load(tar, "localhost/bb:latest")
        res = pm.run(ref, "echo", "hello", runtime="myrt")

Every helper has a timeout, and every context manager cleans up after itself even when the body
raised: tasks, shims, conmon processes, mounts, cgroups, sockets and its temporary directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import gc
import hashlib
import json
import os
import pty
import re
import secrets
import select
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import termios
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

DEFAULT_TIMEOUT = 60.0
"""Seconds any single client command may take before it is killed."""

CONTAINERD_START_TIMEOUT = 30.0

# ---------------------------------------------------------------------------------------------
# errors


class HarnessError(RuntimeError):
    """The harness itself could not do what was asked (a daemon did not start, cleanup failed)."""


class CommandError(subprocess.CalledProcessError):
    """A client command exited non-zero; ``str()`` shows its stderr and stdout."""

    def __str__(self) -> str:
        text = super().__str__()
        for name, value in (("stderr", self.stderr), ("stdout", self.output)):
            if value:
                if isinstance(value, bytes):
                    value = value.decode(errors="replace")
                text += f"\n--- {name} ---\n{value[-4000:]}"
        return text


# ---------------------------------------------------------------------------------------------
# process plumbing

_PR_SET_CHILD_SUBREAPER = 36
_MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def become_subreaper() -> None:
    """Make this process a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER, 1)``).

    Shims and conmon double-fork; their orphans re-parent to the nearest subreaper.  PID 1 on
    these machines does not reap, so without this they would stay zombies forever.  Call
    :func:`reap_zombies` after each client run (the context managers do it when they stop).
    """
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[1])


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def processes_mentioning(*markers: str, names: Sequence[str] = ()) -> list[int]:
    """Live processes (not this one) with an argument, or an open file, containing one of ``markers`` and,
    when ``names`` is given, a program (argv[0]'s base name) starting with one of them. (A VMM names its
    kernel /proc/self/fd/N: the bundle's path is that of a file it holds open.)"""
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        argv = _cmdline(pid)
        if not argv or (names and not os.path.basename(argv[0]).startswith(tuple(names))):
            continue
        words = argv + _open_files(pid)
        if any(m in a for a in words for m in markers) and (st := _read_stat(pid)) and st[0] not in "ZX":
            found.append(pid)
    return found


def _open_files(pid: int) -> list[str]:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _read_stat(pid)
        if st is not None:
            children.setdefault(st[1], []).append(pid)
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first, then grandchildren ...)."""
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _popen_pids() -> set[int]:
    """Pids owned by live, not yet waited-for ``subprocess.Popen`` objects in this process."""
    pids = set()
    for obj in gc.get_objects():
        if isinstance(obj, subprocess.Popen) and obj.returncode is None:
            pids.add(obj.pid)
    return pids


def reap_zombies() -> list[int]:
    """Reap zombie children that nobody else will wait for (adopted orphans); return their pids.

    Zombies that belong to a live ``subprocess.Popen`` object are left alone so that its
    ``wait()`` still sees the real exit status.
    """
    me = os.getpid()
    zombies = []
    for pid in _all_pids():
        st = _read_stat(pid)
        if st is not None and st[1] == me and st[0] in "ZX":
            zombies.append(pid)
    if not zombies:
        return []
    owned = _popen_pids()
    reaped = []
    for pid in zombies:
        if pid in owned:
            continue
        try:
            got, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got:
            reaped.append(pid)
    return reaped


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every pid is gone or a zombie (reaping ours); return those still alive."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        reap_zombies()
        alive = [p for p in pids if (st := _read_stat(p)) is not None and st[0] not in "ZX"]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def eventually(what: str, probe: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``probe()`` (reaping zombies) until it returns something falsy; AssertionError with ``what``
    and its last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        reap_zombies()
        value = probe()
        if not value:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: {value!r}")
        time.sleep(interval)


def kill_tree(pid: int, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
    """Send ``sig`` to ``pid`` and every descendant (leaves first), then wait for them to go."""
    victims = descendants(pid)[::-1] + [pid]
    for p in victims:
        _signal(p, sig)
    _wait_gone(victims, timeout)


def run_cmd(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = False,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None,
            cwd: str | os.PathLike | None = None, text: bool = True) -> subprocess.CompletedProcess:
    """Run a command with captured output and a hard timeout.

    The command runs in its own session; on timeout the whole process group is SIGKILLed and
    ``subprocess.TimeoutExpired`` (with the output so far) is raised.  ``check=True`` raises
    :class:`CommandError` on a non-zero exit.
    """
    argv = [os.fspath(a) for a in argv]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
        cwd=cwd, start_new_session=True, text=text)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild outside the group holds the pipes
            proc.kill()
            for stream in (proc.stdout, proc.stderr):
                stream.close()
            proc.wait()
            out, err = "", ""
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and res.returncode != 0:
        raise CommandError(res.returncode, argv, out, err)
    return res


def missing_binaries(*names: str) -> list[str]:
    """The names (commands or absolute paths) that are not executable here."""
    missing = []
    for name in names:
        if os.path.isabs(name):
            if not os.access(name, os.X_OK):
                missing.append(name)
        elif shutil.which(name) is None:
            missing.append(name)
    return missing


APT_PACKAGES = {
    "containerd": "containerd", "ctr": "containerd", "containerd-shim-runc-v2": "containerd",
    "podman": "podman", "conmon": "conmon", "umoci": "umoci", "busybox": "busybox-static",
    "/bin/busybox": "busybox-static", "/usr/sbin/runc": "runc", "/usr/bin/crun": "crun", "gcc": "gcc",
    "ld": "binutils", "objcopy": "binutils", "qemu-system-x86_64": "qemu-system-x86", "nsenter": "util-linux",
    "ip": "iproute2",
}
"""The Debian package that provides a binary the tests need (scripts/setup.sh installs them all)."""


def require(*binaries: str) -> None:
    """Skip the calling test, naming what to apt-get install, unless every binary is there."""
    missing = missing_binaries(*binaries)
    if missing:
        import pytest

        pkgs = sorted({"containernetworking-plugins" if m.startswith("/usr/lib/cni/") else APT_PACKAGES.get(m, m)
                       for m in missing})
        pytest.skip(f"missing {', '.join(missing)} (apt-get install {' '.join(pkgs)})")


def unique_id(prefix: str = "c") -> str:
    """A container id that will not collide with a concurrent test run."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------------------------
# mounts, directories, cgroups


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts_under(path: str | os.PathLike) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = _unescape_mount(line.split()[4])
            if mnt == base or mnt.startswith(base + "/"):
                found.append(mnt)
    return sorted(set(found), key=len, reverse=True)


def unmount_under(path: str | os.PathLike) -> list[str]:
    """Lazily unmount everything at or below ``path``; return what could not be unmounted."""
    for _ in range(10):
        left = mounts_under(path)
        if not left:
            return []
        for mnt in left:
            _libc.umount2(mnt.encode(), _MNT_DETACH)
    return mounts_under(path)


def remove_tree(path: str | os.PathLike) -> None:
    """Unmount anything below ``path`` and delete it; refuse to delete across a mount."""
    if not os.path.lexists(path):
        return
    left = unmount_under(path)
    if left:
        raise HarnessError(f"cannot unmount {left}; not removing {path}")
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        # chattr or busy files; try once more after a moment
        time.sleep(0.2)
        shutil.rmtree(path)


def remove_cgroups(relative: str) -> list[str]:
    """rmdir ``/sys/fs/cgroup[/<controller>]/<relative>`` bottom-up (empty cgroups only).

    Returns the cgroup directories that could not be removed (still have tasks).
    """
    relative = relative.strip("/")
    if not relative or ".." in relative.split("/"):
        raise ValueError(f"bad cgroup path {relative!r}")
    roots = ["/sys/fs/cgroup"]
    try:
        roots += [os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup")]
    except OSError:
        return []
    left = []
    for root in roots:
        top = os.path.join(root, relative)
        if not os.path.isdir(top) or os.path.islink(root):
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    left.append(dirpath)
    return left


# ---------------------------------------------------------------------------------------------
# terminals


class PtyProcess:
    """A command whose stdin/stdout/stderr are the slave side of a fresh pty (its controlling tty).

    ``read_until()`` reads the master with a deadline, ``send()`` types into it, ``wait()`` keeps
    draining output while waiting so the child never blocks on a full terminal buffer.
    ``close()`` kills the whole process group if it is still running.
    """

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, rows: int = 24, cols: int = 80):
        self.argv = [os.fspath(a) for a in argv]
        self.output = b""
        self.eof = False
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=slave, stdout=slave, stderr=slave, env=dict(env) if env else None,
                cwd=cwd, start_new_session=True, preexec_fn=_make_controlling_tty)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        os.set_blocking(master, False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def text(self) -> str:
        """Everything read so far, decoded, with terminal line ends (``\\r\\n``, and the
        ``\\r\\r\\n`` two stacked ptys give) turned into ``\\n``."""
        return re.sub(r"\r+\n", "\n", self.output.decode(errors="replace"))

    def _read_some(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False at EOF."""
        if self.eof:
            return False
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except BlockingIOError:
            return True
        except OSError as e:  # EIO: every slave fd is closed
            if e.errno != errno.EIO:
                raise
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.output += chunk
        return True

    def read_until(self, pattern: str | bytes | re.Pattern, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Read until ``pattern`` (substring or compiled regex on bytes) appears in the output.

        Returns the output so far; raises ``TimeoutError`` (with the output) if it does not
        appear in time or the terminal closes first.
        """
        if isinstance(pattern, str):
            pattern = pattern.encode()
        deadline = time.monotonic() + timeout

        def found() -> bool:
            if isinstance(pattern, re.Pattern):
                return pattern.search(self.output) is not None
            return pattern in self.output

        while not found():
            left = deadline - time.monotonic()
            if left <= 0 or not self._read_some(min(left, 0.2)):
                if found():
                    break
                why = "timed out" if left <= 0 else "terminal closed"
                raise TimeoutError(f"{why} waiting for {pattern!r} from {self.argv}; output so far:\n"
                                   f"{self.output.decode(errors='replace')[-4000:]}")
        return self.output

    def send(self, data: str | bytes) -> None:
        """Type ``data`` into the terminal."""
        if isinstance(data, str):
            data = data.encode()
        while data:
            try:
                n = os.write(self.master, data)
            except BlockingIOError:
                select.select([], [self.master], [], 1.0)
                continue
            data = data[n:]

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the command to exit (reading its output meanwhile); return its exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.argv, timeout, output=self.output)
            if not self._read_some(min(left, 0.1)):
                time.sleep(0.01)
        # drain what is left in the terminal buffer
        end = time.monotonic() + 1.0
        while time.monotonic() < end and self._read_some(0.05):
            pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> "PtyProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_controlling_tty() -> None:  # runs in the child, after setsid() and the stdio dup2s
    try:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# images


def normalize_ref(ref: str) -> str:
    """``name`` -> ``localhost/name:latest``; keeps a registry host and an explicit tag/digest.

    The same string then works for ctr (which does no normalisation) and podman.
    """
    if "@" not in ref:
        last = ref.rsplit("/", 1)[-1]
        if ":" not in last:
            ref += ":latest"
    first = ref.split("/", 1)[0]
    if "/" not in ref or not ("." in first or ":" in first or first == "localhost"):
        ref = "localhost/" + ref
    return ref


def _split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` of a normalised ref -> (repo, tag)."""
    if "@" in ref:
        raise ValueError(f"digest references cannot be built: {ref!r}")
    repo, tag = ref.rsplit(":", 1)
    if "/" in tag:
        raise ValueError(f"reference has no tag: {ref!r}")
    return repo, tag


def busybox_rootfs(dest: str | os.PathLike,
                   applets: Iterable[str] = ("sh", "echo", "sleep", "cat", "true", "false", "ls",
                                             "ps", "env", "hostname", "id", "uname", "printf")
                   ) -> Path:
    """A minimal rootfs with the static ``/bin/busybox`` (Debian busybox-static) plus applet links.

    Also creates the empty directories runtimes like to mount on (proc, dev, sys, tmp, etc).
    """
    busybox = shutil.which("busybox")
    if busybox is None:
        raise HarnessError("busybox not installed (apt-get install busybox-static)")
    out = run_cmd(["file", "-L", busybox], timeout=10) if shutil.which("file") else None
    if out is not None and "statically linked" not in out.stdout:
        raise HarnessError(f"{busybox} is not static; install busybox-static")
    dest = Path(dest)
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    for applet in applets:
        link = dest / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")
    return dest


def unikraft_rootfs(dest: str | os.PathLike, kernel: bytes | str | os.PathLike,
                    initrd: bytes | str | os.PathLike | None = None) -> Path:
    """A rootfs holding ``unikraft/bin/kernel`` (and ``unikraft/bin/initrd``) as regular files."""
    dest = Path(dest)
    bindir = dest / "unikraft" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, src in (("kernel", kernel), ("initrd", initrd)):
        if src is None:
            continue
        if isinstance(src, bytes):
            (bindir / name).write_bytes(src)
        else:
            shutil.copyfile(src, bindir / name)
        (bindir / name).chmod(0o644)
    return dest


KEEP = object()
"""`unikernel_bundle(resources=KEEP)`: keep the resources `runu spec` writes."""


def unikernel_bundle(dest: str | os.PathLike, kernel: bytes | str | os.PathLike, args: Sequence[str] = (), *,
                     initrd: bytes | str | os.PathLike | None = None, env: Sequence[str] = (),
                     annotations: Mapping[str, str] | None = None, resources: Any = KEEP,
                     netns: str | None = None) -> str:
    """A unikernel bundle at ``dest``: ``runu spec``'s config.json with ``process.args`` the entrypoint plus
    ``args`` and ``process.env`` exactly ``env`` (empty by default, so that mode words such as ``idle`` stay
    the kernel's and are not followed by environment variables); ``netns`` joins that network namespace
    instead of making one."""
    from mocktainer.runtime import spec_template

    dest = Path(dest)
    unikraft_rootfs(dest / "rootfs", kernel, initrd)
    cfg = spec_template(list(args))
    cfg["process"]["env"] = list(env)
    cfg["annotations"] = dict(annotations or {})
    if resources is not KEEP:
        cfg["linux"]["resources"] = dict(resources or {})
    if netns:
        cfg["linux"]["namespaces"] = [{"type": "network", "path": netns}]
    (dest / "config.json").write_text(json.dumps(cfg))
    return str(dest)


def build_image(rootfs_dir: str | os.PathLike, ref: str, *,
                entrypoint: Sequence[str] | None = None, cmd: Sequence[str] | None = None,
                env: Sequence[str] | Mapping[str, str] | None = ("PATH=/bin:/usr/bin:/sbin:/usr/sbin",),
                workdir: str | None = None,
                annotations: Mapping[str, str] | None = None,
                labels: Mapping[str, str] | None = None,
                dest: str | os.PathLike | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Build a single-layer OCI image archive (tar of an OCI layout) from a directory, offline.

    Uses ``umoci init/new/unpack``, copies the directory into the unpacked bundle, then ``umoci
    repack/config/gc`` (not ``umoci insert``: umoci 0.4.7 writes that layer without the tar
    padding and end-of-archive blocks).  The manifest in the layout is named with the full
    normalised ``ref`` (``org.opencontainers.image.ref.name``), which both ``ctr image import
    --base-name`` and ``podman load`` keep as the image name.  ``annotations`` go to the image
    manifest, ``labels`` to the image config.  ``dest`` defaults to ``<rootfs_dir>.oci.tar``.
    Returns the path of the tar.
    """
    if missing_binaries("umoci"):
        raise HarnessError("umoci not installed")
    rootfs_dir = Path(rootfs_dir).resolve()
    if not rootfs_dir.is_dir():
        raise HarnessError(f"not a directory: {rootfs_dir}")
    ref = normalize_ref(ref)
    dest = Path(dest) if dest is not None else rootfs_dir.with_name(rootfs_dir.name + ".oci.tar")
    work = Path(tempfile.mkdtemp(prefix="mocktainer-image-"))
    try:
        layout = work / "layout"
        image = f"{layout}:{ref}"
        umoci = lambda *a: run_cmd(["umoci", *a], timeout=timeout, check=True)  # noqa: E731
        bundle = work / "bundle"
        umoci("init", "--layout", str(layout))
        umoci("new", "--image", image)
        umoci("unpack", "--image", image, str(bundle))
        # cp -a keeps owners, modes, hard links, device nodes and fifos (copytree would block on a fifo)
        run_cmd(["cp", "-a", f"{rootfs_dir}/.", str(bundle / "rootfs")], timeout=timeout, check=True)
        umoci("repack", "--image", image, "--history.created_by", "mocktainer tests/clients.py",
              str(bundle))
        args = ["config", "--image", image, "--no-history"]
        if entrypoint is not None:
            args += ["--clear=config.entrypoint"]
            args += [f"--config.entrypoint={a}" for a in entrypoint]
        if cmd is not None:
            args += ["--clear=config.cmd"]
            args += [f"--config.cmd={a}" for a in cmd]
        if env:
            items = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env)
            args += [f"--config.env={e}" for e in items]
        if workdir:
            args += [f"--config.workingdir={workdir}"]
        for k, v in (labels or {}).items():
            args += [f"--config.label={k}={v}"]
        for k, v in (annotations or {}).items():
            args += [f"--manifest.annotation={k}={v}"]
        umoci(*args)
        umoci("gc", "--layout", str(layout))
        tmp_dest = dest.with_name(dest.name + ".part")
        with tarfile.open(tmp_dest, "w") as tar:
            for entry in sorted(os.listdir(layout)):
                tar.add(layout / entry, arcname=entry)
        os.replace(tmp_dest, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def import_image(containerd: "Containerd", tar: str | os.PathLike, ref: str, *,
                 timeout: float = DEFAULT_TIMEOUT, namespace: str | None = None) -> str:
    """``ctr image import`` an archive made by :func:`build_image`; return the image name in containerd.

    ``namespace`` is the containerd namespace to import into (default: the instance's own); the CRI
    plugin only sees images in :data:`CRI_NAMESPACE`.
    """
    ref = normalize_ref(ref)
    repo, _tag = _split_ref(ref)
    containerd.ctr("image", "import", "--base-name", repo, os.fspath(tar), namespace=namespace,
                   timeout=timeout, check=True)
    names = containerd.ctr("image", "ls", "-q", namespace=namespace, timeout=timeout, check=True).stdout.split()
    if ref not in names:
        raise HarnessError(f"import of {tar} did not create {ref}; images: {names}")
    return ref


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
        mounts, shim sockets, cgroups, the temporary directory.  Safe to call twice."""
        problems = []
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
        for ns in self._namespaces:
            left = remove_cgroups(ns)
            if left:
                problems.append(f"cgroups still in use: {left}")
        reap_zombies()
        if self._own_base and not problems:
            remove_tree(self.base)
        if problems:
            raise HarnessError("containerd cleanup incomplete: " + "; ".join(problems))

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
        for pid in _all_pids():
            argv = _cmdline(pid)
            if not argv or not os.path.basename(argv[0]).startswith("containerd-shim"):
                continue
            if any(a == "-address" and i + 1 < len(argv) and argv[i + 1] == self.address
                   for i, a in enumerate(argv)):
                st = _read_stat(pid)
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
        for pid in _all_pids():
            argv = _cmdline(pid)
            if argv and os.path.basename(argv[0]) == "conmon" and any(marker in a for a in argv):
                st = _read_stat(pid)
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
            _wait_gone(self.conmon_pids(), 5)
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


# ---------------------------------------------------------------------------------------------
# host checks


def crun_cgroup_problem() -> str | None:
    """Why crun 1.8 cannot run containers on this host, or None.

    On a hybrid cgroup host crun refuses ("cgroups in hybrid mode not supported, drop all
    controllers from cgroupv2") while any controller is left on the v2 hierarchy; here that is
    hugetlb.  Fix: give each such controller a v1 hierarchy, e.g.
    ``mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb``.
    """
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # pure cgroup v2: fine
        return None
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            left = f.read().split()
    except OSError:
        return None
    if not left:
        return None
    fixes = "; ".join(f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
                      for c in left)
    return f"hybrid cgroups with controllers {left} on cgroup v2 (crun refuses); fix: {fixes}"
