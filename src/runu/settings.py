"""runu's runtime-wide settings: its config file and its RUNU_* environment variables.

Config file: TOML, `/etc/runu/config.toml` unless the environment variable
`RUNU_CONFIG` of the runu process names another one (an empty `RUNU_CONFIG`
means no file at all). A missing default file is no error; a file named by
`RUNU_CONFIG` must exist. Read at `create` of a unikernel, by `features` and by
the delegate lookup (never by `state`, `kill`, ...; `tomllib` is imported only
when the file exists). The keys are the library's (mocktainer.unikraft.settings)
plus runu's own:

    delegate = "/usr/bin/crun"       # the OCI runtime of non-unikernel containers (runu/delegate.py)

Environment variables of the runu process (the shim's environment) override the
file: RUNU_VMM, RUNU_ACCEL, RUNU_QEMU_BINARY, RUNU_FIRECRACKER_BINARY (here), and
RUNU_DELEGATE (runu.delegate.ENV, read before this module is needed).
"""

from __future__ import annotations

import os

from mocktainer.error import ConfigError
from mocktainer.unikraft import settings as _settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

CONFIG_ENV = "RUNU_CONFIG"
DEFAULT_CONFIG = "/etc/runu/config.toml"
WHAT = "runu config file"

KEYS = dict(_settings.KEYS, delegate=(str, "a path or a program name"))

# setting -> environment variable that overrides it
ENV = {
    "vmm": "RUNU_VMM",
    "accel": "RUNU_ACCEL",
    "qemu_binary": "RUNU_QEMU_BINARY",
    "firecracker_binary": "RUNU_FIRECRACKER_BINARY",
}  # and RUNU_DELEGATE, which runu.delegate reads itself (its calls must not import this module)


class Settings(_settings.Settings):
    """The library's settings with runu's environment variables."""

    __slots__ = ()
    names = ENV


def config_path(environ: Mapping[str, str] | None) -> tuple[str | None, bool]:
    """(path, explicit) of the config file to read; path None when there is none."""
    value = (environ or {}).get(CONFIG_ENV)
    if value is not None:
        return (value or None), True
    return DEFAULT_CONFIG, False


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the config file (when there is one) and `environ` (default: this process')."""
    environ = dict(os.environ) if environ is None else environ
    path, explicit = config_path(environ)
    if path is None:
        return Settings(environ=environ)
    values = _settings.read(path, KEYS, WHAT, missing_ok=not explicit,
                            named_by=" (environment variable %s)" % CONFIG_ENV)
    return Settings(values, path, environ)


def load_for_features(environ: Mapping[str, str] | None = None) -> Settings:
    """As `load`, but a broken config file fails create, not `runu features`: then no file."""
    try:
        return load(environ)
    except ConfigError:
        return Settings(environ=dict(os.environ) if environ is None else environ)
