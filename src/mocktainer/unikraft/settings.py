"""Runtime-wide settings of a VMM-running tool: a config file's values and the environment.

The operator (not the container's author) sets these; annotations in the OCI
config are the per-container knobs and may only choose among what is safe.
Binaries are never taken from annotations: a container must not choose which
host program runs as its VMM.

The library knows the keys the backends read (`KEYS`) and how to check a TOML
file of them (`parse`, `read`). Which file and which environment variables a
tool offers are the tool's choice: it subclasses `Settings` with its `names`
(runu: runu/settings.py, `RUNU_VMM` ... and /etc/runu/config.toml). Every
message about a knob names it through `Settings.get`'s source phrase, so the
library itself names no variable or file.

Keys, all optional:

    vmm = "qemu"                     # or "firecracker": the default backend
    accel = "auto"                   # kvm | tcg | auto: the default accelerator
    qemu_binary = "/opt/qemu/bin/qemu-system-{arch}"   # {arch}: x86_64, aarch64, arm
    firecracker_binary = "/opt/firecracker/firecracker"
    qemu_cpu = "max"                 # default QEMU -cpu model (see qemu.check_cpu_model)
    qemu_extra_args = ["-rtc", "base=localtime"]       # validated like the annotation
"""

from __future__ import annotations

from mocktainer.error import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

MAX_CONFIG_BYTES = 1 << 20  # a few lines in practice

# key -> (type, description for errors): what the VMM backends read
KEYS: dict[str, tuple[type, str]] = {
    "vmm": (str, "a backend name"),
    "accel": (str, "kvm, tcg or auto"),
    "qemu_binary": (str, "a path or a program name"),
    "firecracker_binary": (str, "a path or a program name"),
    "qemu_cpu": (str, "a QEMU CPU model"),
    "qemu_extra_args": (list, "a list of strings"),
}


class Settings:
    """A config file's values plus the environment, with where each came from.

    `get(key)` returns (value, source) with source a phrase for error messages
    ("environment variable RUNU_VMM", "vmm in /etc/runu/config.toml"), or
    (None, None) when unset. `environ` is the tool's environment (PATH for the
    VMM lookup); `names` maps a key to the environment variable that overrides
    the file: none here, a tool's subclass names its own.
    """

    __slots__ = ("path", "values", "environ")
    names: Mapping[str, str] = {}
    environ: Mapping[str, str]

    def __init__(self, values: dict[str, Any] | None = None, path: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.values = dict(values or {})
        self.environ = dict(environ or {})

    def get(self, key: str, use_env: bool = True) -> tuple[Any, str | None]:
        env = self.names.get(key)
        if use_env and env:
            value = self.environ.get(env)
            if value:
                return value, "environment variable %s" % env
        if key in self.values:
            return self.values[key], "%s in %s" % (key, self.path)
        return None, None

    def describe(self, key: str) -> str:
        """Where an operator sets `key` ("RUNU_VMM or vmm in /etc/runu/config.toml"), for help texts."""
        places = []
        if key in self.names:
            places.append("the environment variable %s" % self.names[key])
        places.append("%s in %s" % (key, self.path or "the config file"))
        return " or ".join(places)

    def __repr__(self) -> str:
        return "%s(path=%r, values=%r)" % (type(self).__name__, self.path, self.values)


def read(path: str, keys: Mapping[str, tuple[type, str]] = KEYS, what: str = "config file",
         missing_ok: bool = True, named_by: str = "") -> dict[str, Any]:
    """The checked values of the config file `path` ({} when it is missing and `missing_ok`).

    `what` names the file in errors ("runu config file"), `named_by` says who named a
    file that must exist (" (environment variable RUNU_CONFIG)")."""
    from mocktainer.system import read_regular

    try:
        data = read_regular(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ConfigError("%s %s%s does not exist" % (what, path, named_by)) from None
    except OSError as e:
        raise ConfigError("cannot open %s %s: %s" % (what, path, e.strerror)) from None
    except ValueError as e:
        raise ConfigError("%s %s %s" % (what, path, e)) from None
    return parse(data, path, keys, what)


def parse(data: bytes, path: str = "config.toml", keys: Mapping[str, tuple[type, str]] = KEYS,
          what: str = "config file") -> dict[str, Any]:
    """Check and return the settings of a config file's bytes; unknown keys are an error."""
    import tomllib

    try:
        values = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("%s %s is not valid TOML: %s" % (what, path, e)) from None
    for key, value in values.items():
        if key not in keys:
            raise ConfigError("%s %s: unknown key %r (known: %s)"
                              % (what, path, key, ", ".join(sorted(keys))))
        kind, description = keys[key]
        ok = isinstance(value, kind)
        if ok and kind is list:
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError("%s %s: %s must be %s, not %r" % (what, path, key, description, value))
    return values
