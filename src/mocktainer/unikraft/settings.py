"""runu's runtime-wide settings: the config file and the environment.

The operator (not the container's author) sets these; annotations in the OCI
config are the per-container knobs and may only choose among what is safe.

Config file: TOML, `/etc/runu/config.toml` unless the environment variable
`RUNU_CONFIG` of the runu process names another one (an empty `RUNU_CONFIG`
means no file at all). A missing default file is no error; a file named by
`RUNU_CONFIG` must exist. Read at `create` of a unikernel and by `features`
(never by `state`, `kill`, ...; `tomllib` is imported only when the file
exists). Keys, all optional, unknown keys are an error:

    vmm = "qemu"                     # or "firecracker": the default backend
    accel = "auto"                   # kvm | tcg | auto: QEMU's default accelerator
    qemu_binary = "/opt/qemu/bin/qemu-system-{arch}"   # {arch}: x86_64, aarch64, arm
    firecracker_binary = "/opt/firecracker/firecracker"
    qemu_cpu = "max"                 # default QEMU -cpu model (see qemu.check_cpu_model)
    qemu_extra_args = ["-rtc", "base=localtime"]       # validated like the annotation
    delegate = "/usr/bin/crun"       # the OCI runtime of non-unikernel containers (runu/delegate.py)

Environment variables of the runu process (the shim's environment) override the
file: RUNU_VMM, RUNU_ACCEL, RUNU_QEMU_BINARY, RUNU_FIRECRACKER_BINARY,
RUNU_DELEGATE. Binaries
are never taken from annotations: a container must not choose which host
program runs as its VMM.
"""

from __future__ import annotations

import os

from mocktainer.error import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

CONFIG_ENV = "RUNU_CONFIG"
DEFAULT_CONFIG = "/etc/runu/config.toml"
MAX_CONFIG_BYTES = 1 << 20  # a few lines in practice

# key -> (type, description for errors)
KEYS = {
    "vmm": (str, "a backend name"),
    "accel": (str, "kvm, tcg or auto"),
    "qemu_binary": (str, "a path or a program name"),
    "firecracker_binary": (str, "a path or a program name"),
    "qemu_cpu": (str, "a QEMU CPU model"),
    "qemu_extra_args": (list, "a list of strings"),
    "delegate": (str, "a path or a program name"),
}

# setting -> environment variable that overrides it
ENV = {
    "vmm": "RUNU_VMM",
    "accel": "RUNU_ACCEL",
    "qemu_binary": "RUNU_QEMU_BINARY",
    "firecracker_binary": "RUNU_FIRECRACKER_BINARY",
    "delegate": "RUNU_DELEGATE",
}


class Settings:
    """The config file's values plus the environment, with where each came from.

    `get(key)` returns (value, source) with source a phrase for error messages
    ("environment variable RUNU_VMM", "vmm in /etc/runu/config.toml"), or
    (None, None) when unset. `environ` is the runu process' environment.
    """

    __slots__ = ("path", "values", "environ")
    environ: Mapping[str, str]

    def __init__(self, values: dict[str, Any] | None = None, path: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.values = dict(values or {})
        self.environ = dict(environ or {})

    def get(self, key: str, use_env: bool = True) -> tuple[Any, str | None]:
        env = ENV.get(key)
        if use_env and env:
            value = self.environ.get(env)
            if value:
                return value, "environment variable %s" % env
        if key in self.values:
            return self.values[key], "%s in %s" % (key, self.path)
        return None, None

    def __repr__(self) -> str:
        return "Settings(path=%r, values=%r)" % (self.path, self.values)


def config_path(environ: Mapping[str, str] | None) -> tuple[str | None, bool]:
    """(path, explicit) of the config file to read; path None when there is none."""
    value = (environ or {}).get(CONFIG_ENV)
    if value is not None:
        return (value or None), True
    return DEFAULT_CONFIG, False


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the config file (when there is one) and `environ`."""
    environ = dict(os.environ) if environ is None else environ
    path, explicit = config_path(environ)
    if path is None:
        return Settings(environ=environ)
    from mocktainer.system import read_regular

    try:
        data = read_regular(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if explicit:
            raise ConfigError("runu config file %s (environment variable %s) does not exist"
                              % (path, CONFIG_ENV)) from None
        return Settings(environ=environ)
    except OSError as e:
        raise ConfigError("cannot open runu config file %s: %s" % (path, e.strerror)) from None
    except ValueError as e:
        raise ConfigError("runu config file %s %s" % (path, e)) from None
    return Settings(parse(data, path), path, environ)


def parse(data: bytes, path: str = "config.toml") -> dict[str, Any]:
    """Check and return the settings of a config file's bytes."""
    import tomllib

    try:
        values = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("runu config file %s is not valid TOML: %s" % (path, e)) from None
    for key, value in values.items():
        if key not in KEYS:
            raise ConfigError("runu config file %s: unknown key %r (known: %s)"
                              % (path, key, ", ".join(sorted(KEYS))))
        kind, what = KEYS[key]
        ok = isinstance(value, kind)
        if ok and kind is list:
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError("runu config file %s: %s must be %s, not %r" % (path, key, what, value))
    return values
