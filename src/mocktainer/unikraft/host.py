"""Facts about this host that the VMM backends need: its architecture, whether KVM works, where a
binary is. One place, so that no backend serves another (and no import circle)."""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

# Shims start runu with a tiny environment: look here after PATH.
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

KVM_DEVICE = "/dev/kvm"
KVM_API_VERSION = 12


def find_binary(name: str, path_env: str | None) -> str:
    """Absolute path of executable `name`, searched in `path_env` then SYSTEM_DIRS.

    A `name` with a slash is taken as a path. Empty PATH entries (which a shell
    would read as the current directory) are skipped. Raises ConfigError when
    nothing executable is found.
    """
    from mocktainer.error import ConfigError

    if "/" in name:
        if is_executable(name):
            return os.path.abspath(name)
        raise ConfigError("%s is not an executable file" % name)
    dirs: list[str] = []
    for d in (path_env or "").split(":") + list(SYSTEM_DIRS):
        if d and d not in dirs:
            dirs.append(d)
    for d in dirs:
        candidate = os.path.join(d, name)
        if is_executable(candidate):
            return os.path.abspath(candidate)
    raise ConfigError("%s not found in PATH (%s) nor in %s"
                      % (name, path_env or "unset", " ".join(SYSTEM_DIRS)))


def is_executable(path: str) -> bool:
    """A regular file we may execute (a directory or a device named like a binary is not)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK)


def kvm_usable(device: str = KVM_DEVICE) -> bool:
    """True when `device` opens read-write and speaks KVM API version 12."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        from mocktainer import system

        return system.kvm_api_version(fd) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def host_arch() -> str:
    """The host's architecture in QEMU's naming (x86_64, aarch64, arm)."""
    m = os.uname().machine
    if m in ("x86_64", "amd64", "i686", "i386"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    if m.startswith("arm"):
        return "arm"
    return m


def hardware_virtualization(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the host CPU advertises vmx or svm (x86) or is not x86."""
    if host_arch() != "x86_64":
        return True
    try:
        with open(cpuinfo, "rb") as f:
            for line in f:
                if line.startswith(b"flags"):
                    flags = line.split(b":", 1)[-1].split()
                    return b"vmx" in flags or b"svm" in flags
    except OSError:
        pass
    return False


def kvm_obstacle(kernel: Any, kvm_check: Callable[[], bool] = kvm_usable,
                 hwvirt_check: Callable[[], bool] = hardware_virtualization) -> str | None:
    """Why KVM cannot run `kernel` (a kernel.Kernel) here, or None when it can."""
    host = host_arch()
    if kernel.arch != host:
        return "a %s guest cannot use KVM on this %s host" % (kernel.arch, host)
    if not kvm_check():
        return "%s is missing or not usable (it must open read-write and answer " \
               "KVM_GET_API_VERSION with %d)" % (KVM_DEVICE, KVM_API_VERSION)
    if kernel.linux and not hwvirt_check():
        return "this host's KVM has no hardware virtualisation (no vmx/svm CPU flag) " \
               "and Linux guests crash under it"
    return None
