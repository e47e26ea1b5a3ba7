"""OCI runtime spec (config.json as a dict) -> configs.Config."""

from __future__ import annotations

import os

from .configs import Command, CommandHook, Config, HOOK_NAMES, Hooks, Namespace, Namespaces, NamespaceType, Network
from .error import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
    if not os.path.isabs(rootfs):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.normpath(rootfs)

    labels = [f"{k}={v}" for k, v in (spec.get("annotations") or {}).items()]
    labels.append(f"bundle={bundle}")

    process = spec.get("process") or {}
    config = Config(
        rootfs=rootfs,
        labels=labels,
        version=spec["ociVersion"],
        apparmor_profile=process.get("apparmorProfile") or "",
        process_label=process.get("selinuxLabel") or "",
        hooks=_hooks(spec.get("hooks")),
    )
    linux = spec.get("linux") or {}
    _namespaces(config, linux.get("namespaces") or [])
    _cgroups(config, linux)
    return config


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
        oci_type = str(ns.get("type"))
        t = NamespaceType.from_oci(oci_type)
        if t is None:
            raise ConfigError(f"namespace {oci_type!r} is not supported (supported: {', '.join(known_namespaces())})")
        if t in seen:
            raise ConfigError(f"malformed spec file: duplicated namespace {oci_type!r}")
        seen.add(t)
        path = ns.get("path") or ""
        if path and not os.path.isabs(path):
            raise ConfigError(f"namespace path {path!r} must be absolute")
        namespaces.append(Namespace(type=t, path=path))
    config.namespaces = namespaces
    if namespaces.contains(NamespaceType.NEWNET) and not namespaces.path_of(NamespaceType.NEWNET):
        # A fresh network namespace starts with `lo` down; the init brings it up.
        config.networks = [Network(type="loopback")]


def _hooks(spec_hooks: dict[str, Any] | None) -> Hooks:
    hooks = Hooks()
    for name in HOOK_NAMES:
        items = (spec_hooks or {}).get(name) or []
        if items:
            hooks[name] = [_hook(name, h) for h in items]
    return hooks


def _hook(name: str, h: dict[str, Any]) -> CommandHook:
    path = h.get("path")
    if not path or not isinstance(path, str):
        raise ConfigError(f"a {name} hook has no path")
    timeout = h.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0):
        raise ConfigError(f"{name} hook {path}: timeout must be a positive number of seconds, got {timeout!r}")
    cmd = Command(path=path, args=list(h.get("args") or []), env=list(h.get("env") or []), timeout=timeout)
    return CommandHook(**cmd.to_dict())
