"""OCI runtime spec (config.json as a dict) -> configs.Config."""

from __future__ import annotations

import os

from .configs import Command, CommandHook, Config, HOOK_NAMES, Hooks, Namespace, Namespaces, NamespaceType, Network
from .error import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


MAX_HOOK_TIMEOUT = 1 << 31  # seconds (68 years): what a wait can be given
# Every namespace type of the runtime spec; types a runtime does not set up may be dropped, others are errors.
OCI_NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


def known_namespaces() -> list[str]:
    """The OCI namespace types this library can set up; callers filter the rest out first."""
    return [oci for oci, _, _ in NamespaceType.INFO.values()]


def check_version(version: Any) -> None:
    """Refuse an `ociVersion` that is not a semantic version of the 1.x runtime spec."""
    if not isinstance(version, str) or not version:
        raise ConfigError("config.json has no ociVersion")
    core = version.split("+", 1)[0].split("-", 1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
        raise ConfigError(f"invalid ociVersion {version!r}: expected a semantic version such as 1.0.2")
    if parts[0] != "1":
        raise ConfigError(f"unsupported ociVersion {version!r}: this runtime implements runtime-spec 1.x")


def create_config(spec: dict[str, Any], bundle: str) -> Config:
    if not isinstance(spec, dict):
        raise ConfigError("the OCI spec must be a JSON object")
    check_version(spec.get("ociVersion"))
    root = spec.get("root")
    if not isinstance(root, dict) or not root.get("path"):
        raise ConfigError("config.json has no root.path: the spec must name the container's root filesystem")
    bundle = os.path.abspath(bundle)
    rootfs = root["path"]
    if not isinstance(rootfs, str) or "\0" in rootfs:
        raise ConfigError(f"root.path must be a path (a string), got {rootfs!r}")
    if not os.path.isabs(rootfs):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.normpath(rootfs)

    annotations = _object(spec.get("annotations"), "annotations")
    for k, v in annotations.items():
        if not isinstance(v, str):
            raise ConfigError(f"annotation {k!r} must have a string value, got {v!r}")
    labels = [f"{k}={v}" for k, v in annotations.items()]
    labels.append(f"bundle={bundle}")

    process = _object(spec.get("process"), "process")
    config = Config(
        rootfs=rootfs,
        labels=labels,
        version=spec["ociVersion"],
        apparmor_profile=_string(process.get("apparmorProfile"), "process.apparmorProfile"),
        process_label=_string(process.get("selinuxLabel"), "process.selinuxLabel"),
        hooks=_hooks(spec.get("hooks")),
    )
    linux = _object(spec.get("linux"), "linux")
    _namespaces(config, _list(linux.get("namespaces"), "linux.namespaces"))
    _cgroups(config, linux)
    return config


def _object(value: Any, what: str) -> dict[str, Any]:
    """An optional JSON object: absent or null is empty; anything else but an object is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be an object, got {value!r}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{what} must be a list, got {value!r}")
    return value


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {value!r}")
    return value


def _strings(value: Any, what: str) -> list[str]:
    items = _list(value, what)
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{what} must be a list of strings, got {value!r}")
    return items


def _cgroups(config: Config, linux: dict[str, Any]) -> None:
    """cgroupsPath and resources are kept as given; their values are checked here, applied at start."""
    path = linux.get("cgroupsPath")
    path = "" if path is None else path
    if not isinstance(path, str):
        raise ConfigError(f"linux.cgroupsPath must be a string, got {path!r}")
    resources = linux.get("resources")
    resources = {} if resources is None else resources
    if not isinstance(resources, dict):
        raise ConfigError(f"linux.resources must be an object, got {resources!r}")
    if resources:
        from .cgroups import check_resources

        check_resources(resources)
    config.cgroups_path = path
    config.resources = resources


def _namespaces(config: Config, items: list[dict[str, Any]]) -> None:
    seen = set()
    namespaces = Namespaces()
    for ns in items:
        if not isinstance(ns, dict):
            raise ConfigError(f"linux.namespaces entries must be objects, got {ns!r}")
        oci_type = str(ns.get("type"))
        t = NamespaceType.from_oci(oci_type)
        if t is None:
            raise ConfigError(f"namespace {oci_type!r} is not supported (supported: {', '.join(known_namespaces())})")
        if t in seen:
            raise ConfigError(f"malformed spec file: duplicated namespace {oci_type!r}")
        seen.add(t)
        path = _string(ns.get("path"), f"path of the {oci_type} namespace")
        if path and not os.path.isabs(path):
            raise ConfigError(f"namespace path {path!r} must be absolute")
        namespaces.append(Namespace(type=t, path=path))
    config.namespaces = namespaces
    if namespaces.contains(NamespaceType.NEWNET) and not namespaces.path_of(NamespaceType.NEWNET):
        # A fresh network namespace starts with `lo` down; the init brings it up.
        config.networks = [Network(type="loopback")]


def _hooks(spec_hooks: Any) -> Hooks:
    hooks = Hooks()
    spec_hooks = _object(spec_hooks, "hooks")
    for name in HOOK_NAMES:
        items = _list(spec_hooks.get(name), f"hooks.{name}")
        if items:
            hooks[name] = [_hook(name, h) for h in items]
    return hooks


def _hook(name: str, h: Any) -> CommandHook:
    if not isinstance(h, dict):
        raise ConfigError(f"a {name} hook must be an object, got {h!r}")
    path = h.get("path")
    if not path or not isinstance(path, str):
        raise ConfigError(f"a {name} hook has no path")
    if not os.path.isabs(path) or "\0" in path:
        # (the spec: it MUST be absolute; a relative one would resolve wherever the hook happens to run, e.g.
        # inside the image's rootfs for createContainer, and run a file of the image as root)
        raise ConfigError(f"{name} hook path {path!r} is not an absolute path")
    timeout = h.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0
                                or timeout > MAX_HOOK_TIMEOUT):
        raise ConfigError(f"{name} hook {path}: timeout must be a whole number of seconds from 1 to "
                          f"{MAX_HOOK_TIMEOUT}, got {timeout!r}")
    cmd = Command(path=path, args=_strings(h.get("args"), f"{name} hook {path}: args"),
                  env=_strings(h.get("env"), f"{name} hook {path}: env"), timeout=timeout)
    return CommandHook(**cmd.to_dict())
