"""Containers that are not unikernels go to a delegate: a standard OCI runtime (crun or runc).

A Kubernetes RuntimeClass hands runu every container of a pod: the pause
sandbox, the unikernels, and whatever else the pod holds (sidecars, init
containers). runu boots the unikernels itself and hands every other container
to the delegate, which runs it with the isolation it would have without runu:
runu never runs an image's binary on the host.

- Which containers: a bundle whose rootfs has no `unikraft/bin/kernel`, and
  every CRI sandbox (annotation `io.kubernetes.cri.container-type=sandbox`),
  even one with a kernel (the pod's sandbox must hold real namespaces).
- How: runu replaces itself with the delegate (exec, no waiting parent), with
  `--root <root>/@delegate`, the same global flags (`--log`, `--log-format`,
  `--systemd-cgroup`, `--debug`, `--criu`, `--rootless`) and the command's own
  arguments unchanged; the delegate's errors reach the client as it wrote them.
- One namespace of ids per root: the delegate's state lives in
  `<root>/@delegate`, a name no container id can take ('@' is not allowed in
  ids). Which kind an id is costs a stat or two: `<root>/<id>` is runu's,
  `<root>/@delegate/<id>` the delegate's. A create checks that the other side
  does not hold the id (see `check_unclaimed`).
- Which runtime: environment variable RUNU_DELEGATE, else `delegate` in runu's
  config file (see runu/settings.py), else the first of crun and
  runc in SYSTEM_DIRS. A bare name is looked up in PATH, then SYSTEM_DIRS; a
  path must be absolute. The delegate is chosen at every call, so switch it only
  when no delegated container exists.

This module is loaded on every runu call: the standard library's `os` only,
until a call turns out to need more.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DELEGATE_DIR = "@delegate"
ENV = "RUNU_DELEGATE"
CANDIDATES = ("crun", "runc")
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
GUARD_ENV = "RUNU_DELEGATED"
"""Set in the delegate's environment: a runu started by its own delegate refuses instead of looping."""
MAX_CONFIG = 16 << 20
"""Bytes of config.json read to tell a unikernel bundle: runc's own limit on a spec is far above real ones."""
INSTALL_HINT = ("install crun or runc (apt-get install crun), or name an OCI runtime with the environment "
                "variable RUNU_DELEGATE or `delegate` in /etc/runu/config.toml")

# Commands runu answers itself, whatever the id.
OWN = frozenset(("list", "features", "spec", "help"))
# Flags that take a value, per command (runc's and crun's), to find the id among the arguments.
_CREATE = frozenset(("bundle", "b", "pid-file", "console-socket", "preserve-fds"))
VALUE_FLAGS: dict[str, frozenset[str]] = {
    "create": _CREATE,
    "run": _CREATE,
    "restore": _CREATE | {"image-path", "work-path", "manage-cgroups-mode", "empty-ns", "lsm-profile",
                          "lsm-mount-context"},
    "ps": frozenset(("format", "f")),
    "exec": frozenset(("console-socket", "pid-file", "process", "p", "cwd", "env", "e", "user", "u",
                       "additional-gids", "g", "process-label", "apparmor", "cap", "c", "preserve-fds", "cgroup")),
    "update": frozenset(("resources", "r", "blkio-weight", "cpu-period", "cpu-quota", "cpu-share", "cpu-rt-period",
                         "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems", "kernel-memory", "kernel-memory-tcp",
                         "memory", "memory-reservation", "memory-swap", "pids-limit", "l3-cache-schema",
                         "mem-bw-schema")),
    "events": frozenset(("interval",)),
    "checkpoint": frozenset(("image-path", "work-path", "parent-path", "page-server", "manage-cgroups-mode",
                             "empty-ns", "status-fd", "lsm-profile", "lsm-mount-context")),
}
# Global flags passed on to the delegate as given (--root is replaced).
PASSED_GLOBALS = ("log", "log-format", "criu", "rootless")
PASSED_BOOLS = ("systemd-cgroup", "debug")


def find_id(command: str, args: list[str]) -> str | None:
    """The container id among a command's arguments: its first positional argument."""
    takes_value = VALUE_FLAGS.get(command, frozenset())
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            return args[i] if i < len(args) else None
        if a.startswith("-") and a != "-":
            name, eq, _ = a.lstrip("-").partition("=")
            if not eq and name in takes_value:
                i += 1
            continue
        return a
    return None


def bundle_of(args: list[str]) -> str:
    """The --bundle/-b of a create or run (default: the current directory, as runc has it)."""
    bundle = "."
    for i, a in enumerate(args):
        if a == "--":
            break
        name, eq, value = a.lstrip("-").partition("=")
        if a.startswith("-") and name in ("bundle", "b"):
            if eq:
                bundle = value
            elif i + 1 < len(args):
                bundle = args[i + 1]
    return os.path.abspath(bundle)


def route(g: dict[str, Any], command: str, args: list[str]) -> None:
    """Exec the delegate when `command` concerns a container that is not a unikernel; return otherwise.

    Returns for runu's own containers, runu's own commands, and whatever runu reports better itself
    (no id, an invalid id, an id that exists nowhere, a bundle whose config.json cannot be read).
    """
    if command in OWN:
        return
    cid = find_id(command, args)
    if cid is None:
        return
    from mocktainer.error import Error
    from mocktainer.ids import validate_id

    try:
        validate_id(cid)
    except Error:
        return  # runu's own command path reports it
    root = os.path.abspath(g["root"])
    mine = os.path.lexists(os.path.join(root, cid))
    if command in ("create", "run", "restore"):
        if mine:
            from mocktainer.error import ExistsError

            raise ExistsError(f"container {cid!r} already exists")
        if command != "restore" and is_unikernel(bundle_of(args)) is not False:
            return
    elif mine or not os.path.lexists(os.path.join(root, DELEGATE_DIR, cid)):
        return
    exec_delegate(g, root, command, args)


def is_unikernel(bundle: str) -> bool | None:
    """Whether runu boots this bundle itself; None when its config.json cannot tell (runu's create then
    says what is wrong with it)."""
    from mocktainer import fastjson, system
    from mocktainer.unikraft import KERNEL, SANDBOX_ANNOTATION

    try:  # bounded, and never blocks on a FIFO planted as config.json
        spec = fastjson.loads(system.read_regular(os.path.join(bundle, "config.json"), MAX_CONFIG))
    except (OSError, ValueError):
        return None
    if not isinstance(spec, dict):
        return None
    annotations = spec.get("annotations")
    if isinstance(annotations, dict) and annotations.get(SANDBOX_ANNOTATION) == "sandbox":
        return False
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path or "\0" in path:
        return None
    return os.path.lexists(os.path.join(bundle, path, KERNEL))


def choose(environ: dict[str, str] | None = None, dirs: tuple[str, ...] = SYSTEM_DIRS) -> tuple[str | None, str]:
    """(path of the delegate or None when there is none, where the choice came from); `dirs`: where the
    default and bare names are looked for."""
    from mocktainer.unikraft.host import is_executable

    env: Mapping[str, str] = os.environ if environ is None else environ
    value = env.get(ENV)
    source = f"environment variable {ENV}"
    if not value:
        from runu import settings

        value, where = settings.load(dict(env)).get("delegate", use_env=False)
        source = where or source
    if not value:
        for name in CANDIDATES:
            for d in dirs:
                path = os.path.join(d, name)
                if is_executable(path):
                    return path, f"default: the first of {', '.join(CANDIDATES)} in {':'.join(dirs)}"
        return None, f"default: none of {', '.join(CANDIDATES)} is in {':'.join(dirs)}"
    if "/" in value:
        return value, source
    for d in [d for d in env.get("PATH", "").split(":") if d and os.path.isabs(d)] + list(dirs):
        path = os.path.join(d, value)
        if is_executable(path):
            return path, source
    return value, source


def binary(environ: dict[str, str] | None = None, dirs: tuple[str, ...] = SYSTEM_DIRS) -> str:
    """The delegate's path; an error that says what to install or set when there is no usable one."""
    from mocktainer.error import ConfigError
    from mocktainer.unikraft.host import is_executable

    path, source = choose(environ, dirs)
    if path is None:
        raise ConfigError(f"no OCI runtime to run a container that is not a unikernel ({source}): {INSTALL_HINT}")
    if not os.path.isabs(path):
        raise ConfigError(f"delegate OCI runtime {path!r} ({source}) must be an absolute path or a program in "
                          f"PATH or {':'.join(SYSTEM_DIRS)}; {INSTALL_HINT}")
    if not is_executable(path):
        what = "does not exist" if not os.path.lexists(path) else "is not an executable file"
        raise ConfigError(f"delegate OCI runtime {path} ({source}) {what}: {INSTALL_HINT}")
    return path


def command_line(g: dict[str, Any], root: str, path: str, command: str, args: list[str]) -> list[str]:
    """The delegate's argv: its own root under runu's, the global flags as given, the command unchanged."""
    argv = [path, "--root", os.path.join(root, DELEGATE_DIR)]
    for name in PASSED_GLOBALS:
        if g.get(name) is not None:
            argv += [f"--{name}", g[name]]
    argv += [f"--{name}" for name in PASSED_BOOLS if g.get(name)]
    return argv + [command] + list(args)


def exec_delegate(g: dict[str, Any], root: str, command: str, args: list[str]) -> None:
    """Replace this process with the delegate (returns only by raising)."""
    from mocktainer.error import ConfigError

    if os.environ.get(GUARD_ENV):
        raise ConfigError(f"the delegate OCI runtime started runu again (it is runu itself?): {INSTALL_HINT}")
    path = binary()
    argv = command_line(g, root, path, command, args)
    env = dict(os.environ)
    env[GUARD_ENV] = "1"
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execve(path, argv, env)
    except OSError as e:
        raise ConfigError(f"cannot run the delegate OCI runtime {path}: {e.strerror}: {INSTALL_HINT}") from None


def delegated(root: str, cid: str) -> bool:
    return os.path.lexists(os.path.join(os.path.abspath(root), DELEGATE_DIR, cid))


def check_unclaimed(root: str, cid: str) -> None:
    """A unikernel's create refuses an id the delegate holds (called before and after runu claims the id:
    a delegated create that checked `<root>/<id>` just before runu's claim is caught by the second call)."""
    if delegated(root, cid):
        from mocktainer.error import ExistsError

        raise ExistsError(f"container {cid!r} already exists (run by the delegate OCI runtime)")


def list_containers(root: str) -> list[dict[str, Any]]:
    """The delegate's containers, with the keys of runu's own `list --format json` entries."""
    droot = os.path.join(os.path.abspath(root), DELEGATE_DIR)
    try:
        if not os.listdir(droot):
            return []
    except OSError:
        return []
    import subprocess

    from mocktainer import fastjson
    from mocktainer.error import warn

    path = binary()
    r = subprocess.run([path, "--root", droot, "list", "--format", "json"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        warn(f"{path} list: {r.stderr.decode(errors='replace').strip() or f'exit status {r.returncode}'}")
        return []
    try:
        items = fastjson.loads(r.stdout.strip() or b"[]") or []  # runc prints null for none
    except ValueError:
        warn(f"{path} list printed no JSON list")
        return []
    out = []
    for it in items if isinstance(items, list) else []:
        if not isinstance(it, dict) or not isinstance(it.get("id"), str):
            continue
        out.append({"ociVersion": it.get("ociVersion", ""), "id": it["id"], "pid": it.get("pid") or 0,
                    "status": it.get("status", ""), "bundle": it.get("bundle", ""), "rootfs": it.get("rootfs", ""),
                    "created": it.get("created", ""), "owner": it.get("owner", ""),
                    "annotations": it.get("annotations") or {}})
    return out


def feature_annotations() -> dict[str, str]:
    """What `runu features` says about the delegate: the one found here and where the choice came from."""
    path, source = choose()
    return {
        "org.unikraft.runu.delegate": path or "none (" + INSTALL_HINT + ")",
        "org.unikraft.runu.delegate.source": source,
        "io.kubernetes.cri.container-type": "sandbox, and every container without rootfs/unikraft/bin/kernel: "
                                            "run by the delegate OCI runtime",
    }
