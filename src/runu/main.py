"""runu's command line: parse, call mocktainer.runtime, print.

Flags are parsed by hand: argparse costs ~9 ms to import and runu's start-up is
on the path of every containerd call. Like runc, `-flag` and `--flag`, `--flag
value` and `--flag=value` are all accepted, and global flags come before the
command.
"""

from __future__ import annotations

import os
import sys

DEFAULT_ROOT = "/run/runu"  # the state directory, as runc's /run/runc (USAGE says it too)
# The default cgroup of a container (no linux.cgroupsPath): /runu/<id>-<crc of the root>, or
# system.slice:runu:<id>-<crc> with --systemd-cgroup (see mocktainer.cgroups).
CGROUP_PARENT = "runu"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    from mocktainer.unikraft.vmm import Knobs

# name -> (kind, short alias); kinds: "str", "bool", "int"
GLOBAL_FLAGS = {
    "root": ("str", None), "log": ("str", None), "log-format": ("str", None), "systemd-cgroup": ("bool", None),
    "debug": ("bool", None), "criu": ("str", None), "rootless": ("str", None), "help": ("bool", "h"),
    "version": ("bool", "v"),
}
CREATE_FLAGS = {
    "bundle": ("str", "b"), "pid-file": ("str", None), "console-socket": ("str", None), "no-pivot": ("bool", None),
    "no-new-keyring": ("bool", None), "preserve-fds": ("int", None),
}
UNSUPPORTED = ("exec", "pause", "resume", "update", "checkpoint", "restore", "events")


class UsageError(Exception):
    pass


def parse_flags(args: list[str], spec: dict[str, tuple[str, str | None]], stop_at_positional: bool
                ) -> tuple[dict[str, Any], list[str]]:
    """Split `args` into ({flag: value}, positionals)."""
    shorts = {alias: name for name, (_, alias) in spec.items() if alias}
    flags: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            rest.extend(args[i:])
            break
        if not a.startswith("-") or a == "-":
            rest.append(a)
            if stop_at_positional:
                rest.extend(args[i:])
                break
            continue
        name, eq, value = a.lstrip("-").partition("=")
        name = shorts.get(name, name)
        if name not in spec:
            raise UsageError(f"flag provided but not defined: {a.split('=')[0]}")
        kind = spec[name][0]
        if kind == "bool":
            if eq:
                if value not in ("true", "false"):
                    raise UsageError(f"invalid boolean value {value!r} for flag --{name}")
                flags[name] = value == "true"
            else:
                flags[name] = True
            continue
        if not eq:
            if i >= len(args):
                raise UsageError(f"flag needs an argument: --{name}")
            value = args[i]
            i += 1
        if kind == "int":
            if not value.isdigit():
                raise UsageError(f"invalid value {value!r} for flag --{name}: expected a non-negative number")
            flags[name] = int(value)
        else:
            flags[name] = value
    return flags, rest


def one_id(rest: list[str], command: str, extra: int = 0) -> str:
    if not rest:
        raise UsageError(f"'{command}' requires a container id")
    if len(rest) > 1 + extra:
        raise UsageError(f"'{command}' got unexpected arguments: {' '.join(rest[1 + extra:])}")
    return rest[0]


class Log:
    """--log/--log-format: the file containerd reads our last error from."""

    def __init__(self, path: str | None, fmt: str | None, debug: bool) -> None:
        self.path = path
        self.json = (fmt or "text") == "json"
        self.debug_on = debug

    def write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        from mocktainer import fastjson
        from mocktainer.state import now_rfc3339

        t = now_rfc3339()
        if self.json:
            line = fastjson.dumps({"level": level, "msg": msg, "time": t})
        else:
            line = f"time={fastjson.dumps(t)} level={level} msg={fastjson.dumps(msg)}"
        try:
            # O_NOFOLLOW: a symlink planted at the log's path is not followed (the line is dropped), so it
            # cannot make runu append to a file elsewhere. O_NONBLOCK and the check of the open file: a FIFO
            # (or a device) there never blocks runu; only a regular file gets the line.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                         | os.O_NONBLOCK | os.O_NOCTTY, 0o644)
        except OSError:
            return
        try:
            import stat

            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.write(fd, line.encode() + b"\n")
        except OSError:
            pass  # a full disk must not turn the error being reported into a traceback
        finally:
            os.close(fd)

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self.write("debug", msg)


# ---- commands: each parses its own flags, calls the library, prints -------------------

def cmd_create(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer import runtime

    from runu.delegate import check_unclaimed

    flags, rest = parse_flags(args, CREATE_FLAGS, False)
    cid = one_id(rest, "create")
    check_unclaimed(g["root"], cid)
    runtime.create(g["root"], cid, flags.get("bundle") or os.getcwd(), **_create_options(g, flags))
    _unclaimed_after_create(g["root"], cid)
    return 0


def _unclaimed_after_create(root: str, cid: str) -> None:
    """A delegated create of the same id that raced this one: the later of the two gives way."""
    from mocktainer import runtime

    from runu.delegate import check_unclaimed

    try:
        check_unclaimed(root, cid)
    except Exception:
        runtime.delete(root, cid, force=True, cgroup_parent=CGROUP_PARENT)
        raise


def cmd_run(g: dict[str, Any], args: list[str], log: Log) -> int:
    spec = dict(CREATE_FLAGS, detach=("bool", "d"), keep=("bool", None))
    flags, rest = parse_flags(args, spec, False)
    cid = one_id(rest, "run")
    from runu.delegate import check_unclaimed

    check_unclaimed(g["root"], cid)
    from runu.run import run

    return run(g["root"], cid, flags.get("bundle") or os.getcwd(), detach=flags.get("detach", False),
               **_create_options(g, flags))


def _create_options(g: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """What `create` and `run` both pass to runtime.create: one place, so the two cannot drift apart."""
    return {"pid_file": flags.get("pid-file"), "console_socket": flags.get("console-socket"),
            "preserve_fds": flags.get("preserve-fds", 0), "no_new_keyring": flags.get("no-new-keyring", False),
            "log_level": "debug" if g.get("debug") else None, "systemd_cgroup": bool(g.get("systemd-cgroup")),
            "load_settings": _load_settings, "cgroup_parent": CGROUP_PARENT}


def _load_settings(environ: Mapping[str, str]) -> Knobs:
    """runu's settings (RUNU_*, /etc/runu/config.toml), imported only when a unikernel is planned."""
    from runu.settings import load

    return load(environ)


def cmd_start(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer import runtime

    _, rest = parse_flags(args, {}, False)
    runtime.start(g["root"], one_id(rest, "start"))
    return 0


def cmd_state(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer import runtime

    from runu.output import pretty_json

    _, rest = parse_flags(args, {}, False)
    print(pretty_json(runtime.state(g["root"], one_id(rest, "state"))))
    return 0


def cmd_kill(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer.kill import kill

    from runu.signals import parse_signal

    flags, rest = parse_flags(args, {"all": ("bool", "a")}, False)
    cid = one_id(rest, "kill", extra=1)
    sig = parse_signal(rest[1] if len(rest) > 1 else "TERM")
    kill(g["root"], cid, sig, all=flags.get("all", False))
    return 0


def cmd_delete(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer.delete import delete

    flags, rest = parse_flags(args, {"force": ("bool", "f")}, False)
    delete(g["root"], one_id(rest, "delete"), force=flags.get("force", False), cgroup_parent=CGROUP_PARENT)
    return 0


def cmd_ps(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer import fastjson, runtime

    from runu.output import table

    flags, rest = parse_flags(args, {"format": ("str", "f")}, True)
    cid = one_id(rest[:1], "ps")
    pids = runtime.ps(g["root"], cid)
    fmt = flags.get("format", "table")
    if fmt == "json":
        print(fastjson.dumps(pids))
    elif fmt == "table":
        rows = [[str(p), _cmdline(p)] for p in pids]
        print(table(["PID", "CMD"], rows))
    else:
        raise UsageError(f"invalid format {fmt!r}: use table or json")
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def cmd_list(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer import fastjson, runtime

    from runu.output import table

    flags, rest = parse_flags(args, {"format": ("str", "f"), "quiet": ("bool", "q")}, False)
    if rest:
        raise UsageError(f"'list' takes no arguments, got {' '.join(rest)}")
    from runu import delegate

    items = sorted(runtime.list_containers(g["root"]) + delegate.list_containers(g["root"]), key=lambda s: s["id"])
    fmt = flags.get("format", "table")
    if flags.get("quiet"):
        for st in items:
            print(st["id"])
    elif fmt == "json":
        print(fastjson.dumps(items))
    elif fmt == "table":
        rows = [[st["id"], str(st["pid"]), st["status"], st["bundle"], st["created"], st["owner"] or "root"]
                for st in items]
        print(table(["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], rows))
    else:
        raise UsageError(f"invalid format {fmt!r}: use table or json")
    return 0


def cmd_features(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer import runtime

    from runu.output import pretty_json

    from runu.delegate import feature_annotations

    from runu.settings import load_for_features

    features = runtime.features(load_for_features())
    features["annotations"].update(feature_annotations())
    print(pretty_json(features))
    return 0


def cmd_spec(g: dict[str, Any], args: list[str], log: Log) -> int:
    from mocktainer import runtime

    from runu.output import pretty_json

    flags, rest = parse_flags(args, {"bundle": ("str", "b"), "rootless": ("bool", None)}, False)
    path = os.path.join(flags.get("bundle") or ".", "config.json")
    if os.path.lexists(path):
        from mocktainer.error import Error

        raise Error(f"{path} already exists; remove it first")
    with open(path, "x") as f:
        f.write(pretty_json(runtime.spec_template(rest)) + "\n")
    return 0


COMMANDS: dict[str, Callable[[dict[str, Any], list[str], Log], int]] = {
    "create": cmd_create, "start": cmd_start, "state": cmd_state, "kill": cmd_kill, "delete": cmd_delete,
    "ps": cmd_ps, "list": cmd_list, "run": cmd_run, "features": cmd_features, "spec": cmd_spec,
}

USAGE = """usage: runu [global flags] COMMAND [flags] [ID] [args]

An OCI runtime that boots unikernels (rootfs/unikraft/bin/kernel) in a VMM.

commands: create, start, state, kill, delete, ps, list, run, features, spec
global flags: --root DIR (default /run/runu), --log FILE, --log-format text|json,
              --systemd-cgroup, --debug, --version
"""


def main(argv: list[str] | None = None, *, delegate: bool = True) -> int:
    """The command line. Called without `argv` (by the `runu` launcher) it ends the process itself.

    `delegate=False` keeps every container with runu (no delegate OCI runtime): the library's own paths
    driven through the command line, for tests of the library; the `runu` launcher never sets it.
    """
    if argv is not None:
        return _main(argv, delegate)
    code = _main(sys.argv[1:], delegate)
    # Finalising the interpreter (freeing every module and object) costs 1.5-3 ms per call, and runu
    # leaves nothing to finalise: its files are written with os.write and closed, and no atexit handler
    # matters. Flush what print() buffered and leave.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = 120  # what the interpreter itself answers when it cannot flush stdout at exit
    os._exit(code)


def _main(argv: list[str], delegate: bool = True) -> int:
    log = Log(None, None, False)
    try:
        g, rest = parse_flags(argv, GLOBAL_FLAGS, True)
        log = Log(g.get("log"), g.get("log-format"), bool(g.get("debug")))
        _route_warnings(log)
        if g.get("log-format") not in (None, "text", "json"):
            raise UsageError(f"invalid --log-format {g['log-format']!r}: use text or json")
        g.setdefault("root", os.environ.get("RUNU_ROOT") or DEFAULT_ROOT)
        if not g["root"]:
            raise UsageError(f"--root must not be empty: give the state directory (default {DEFAULT_ROOT})")
        if g.get("version"):
            from runu import __version__

            print(f"runu version {__version__}\nspec: 1.0.2")
            return 0
        if g.get("help") or not rest:
            sys.stdout.write(USAGE)
            return 0 if g.get("help") else 1
        command, args = rest[0], rest[1:]
        if delegate:
            from runu.delegate import route

            route(g, command, args)  # execs the delegate OCI runtime for a container that is not a unikernel
        log.debug(f"{command} {' '.join(args)}")
        if command in UNSUPPORTED:
            raise UsageError(f"'{command}' is not supported for unikernels: a VM has no container process tree to "
                             f"{command} into" if command == "exec" else
                             f"'{command}' is not supported for unikernels")
        handler = COMMANDS.get(command)
        if handler is None:
            raise UsageError(f"unknown command {command!r}; try 'runu --help'")
        code = handler(g, args, log)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        msg = _message(e)
        log.write("error", msg)
        if log.debug_on:
            import traceback

            traceback.print_exc()
        try:
            sys.stderr.write(f"runu: {msg}\n")
            sys.stderr.flush()
        except OSError:
            pass
        return 1


def _route_warnings(log: Log) -> None:
    """Library warnings (failed poststop hooks, refused cgroup limits) reach the user like errors do."""
    from mocktainer import error

    def sink(msg: str) -> None:
        log.write("warning", msg)
        try:
            sys.stderr.write(f"runu: warning: {msg}\n")
        except OSError:
            pass

    error.warning_sink = sink
    # The init logs at the level create/run asked for (debug with --debug, else info and up).
    error.log_sink = log.write


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f" {e.filename}" if e.filename else ""
        return f"{e.strerror}{':' + where if where else ''}"
    text = str(e).replace("\n", " ").strip()
    return text or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
