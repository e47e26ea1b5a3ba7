"""mocktainer.unikraft.vmm: choosing a backend, and each backend's exit status from the VMM's wait status."""

import os
import shutil

import pytest

from harness.unikernels import exited, killed, make_exe
from mocktainer.error import ConfigError
from mocktainer.unikraft import firecracker, host, qemu, vmm
from runu import settings

# Firecracker counts as available only where KVM is usable (/dev/kvm is root's here).
needs_kvm = pytest.mark.skipif(not host.kvm_usable(), reason="firecracker needs a usable /dev/kvm")

class TestChooseVmm:
    def choose(self, annotations=None, environ=None, values=None):
        return vmm.choose(annotations or {}, settings.Settings(values, "/etc/runu/config.toml", environ))

    def test_precedence(self):
        assert self.choose() == ("qemu", "default")
        assert self.choose(values={"vmm": "firecracker"}) == \
            ("firecracker", "vmm in /etc/runu/config.toml")
        assert self.choose(environ={"RUNU_VMM": "qemu"}, values={"vmm": "firecracker"}) == \
            ("qemu", "environment variable RUNU_VMM")
        assert self.choose({vmm.VMM_ANNOTATION: "Firecracker"}, {"RUNU_VMM": "qemu"})[0] == "firecracker"
        assert self.choose({vmm.VMM_ANNOTATION: ""}, {"RUNU_VMM": "firecracker"})[0] == "firecracker"

    @pytest.mark.parametrize("annotations,environ,values,source", [
        ({"org.unikraft.runu.vmm": "cloud-hypervisor"}, {}, {}, "annotation org.unikraft.runu.vmm"),
        ({}, {"RUNU_VMM": "xen"}, {}, "environment variable RUNU_VMM"),
        ({}, {}, {"vmm": "bhyve"}, "vmm in /etc/runu/config.toml"),
    ])
    def test_unknown(self, annotations, environ, values, source):
        with pytest.raises(ConfigError) as e:
            self.choose(annotations, environ, values)
        assert str(e.value).startswith(source + "=")
        assert str(e.value).endswith("is not a VMM runu knows: use qemu or firecracker")

    def test_registry(self):
        for name in vmm.BACKENDS:
            module = vmm.backend(name)
            assert module.NAME == name and module.OVERHEAD_MIB > 0
            assert callable(module.launch) and callable(module.find) and callable(module.linux_params)
        with pytest.raises(ConfigError, match="no VMM backend called 'x'"):
            vmm.backend("x")

    @needs_kvm
    def test_available_honours_the_binary_settings(self, tmp_path):
        fc = make_exe(tmp_path / "my-firecracker")
        qemu_bin = make_exe(tmp_path / "qemu-x86_64-custom")
        s = settings.Settings({"firecracker_binary": str(fc), "qemu_binary": str(tmp_path / "qemu-{arch}-custom")},
                              "/c", {"PATH": "/nonexistent"})
        assert vmm.available(s, "x86_64") == [("qemu", str(qemu_bin)), ("firecracker", str(fc))]
        s = settings.Settings({"firecracker_binary": str(tmp_path / "no"), "qemu_binary": str(tmp_path / "no")},
                              "/c", {"PATH": "/nonexistent"})
        assert vmm.available(s, "x86_64") == []
        assert vmm.available(settings.Settings(environ={"RUNU_FIRECRACKER_BINARY": str(fc)}), "aarch64") \
            in ([], [("qemu", shutil.which("qemu-system-aarch64"))])

    @needs_kvm
    def test_feature_annotations(self, tmp_path):
        fc = make_exe(tmp_path / "fc")
        ann = vmm.feature_annotations(settings.load_for_features(
            {"RUNU_CONFIG": "", "RUNU_FIRECRACKER_BINARY": str(fc), "RUNU_VMM": "firecracker"}))
        assert "firecracker" in ann["org.unikraft.runu.vmm.available"].split(",")
        assert ann["org.unikraft.runu.vmm.default"] == "firecracker"
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items())
        broken = tmp_path / "broken.toml"
        broken.write_text("vmm = [")
        ann = vmm.feature_annotations(settings.load_for_features({"RUNU_CONFIG": str(broken)}))
        assert ann["org.unikraft.runu.vmm.default"] == "qemu"
        assert "runtime-wide: the environment variable RUNU_VMM or vmm in the config file" \
            in ann["org.unikraft.runu.vmm"]


class TestExitStatus:
    @pytest.mark.parametrize("status,reason,code,says", [
        (exited(83), None, 0, None),                     # Unikraft's clean halt (41 to 0x501)
        (exited(85), None, 1, "the guest crashed"),      # Unikraft's crash (42 to 0x501)
        (exited(85), "guest-shutdown", 1, "the guest crashed"),
        (exited(0), None, 0, None),                      # ACPI power-off, or QEMU quit
        (exited(0), "guest-shutdown", 0, None),
        (exited(0), "host-qmp-quit", 0, None),
        (exited(0), "guest-reset", 1, "triple fault"),   # -no-reboot: a reset ends QEMU with 0
        (exited(0), "guest-panic", 1, "panicked"),
        (exited(0), "internal-error", 1, "KVM internal error"),
        (exited(1), None, 1, "QEMU exited with status 1"),
        (exited(1), "guest-panic", 1, "panicked"),       # -action panic=exit-failure
        (exited(7), None, 7, None),                      # runu's test kernels: (3 << 1) | 1, unchanged
        (exited(11), "guest-shutdown", 11, None),
        (killed(9), None, 137, None),
        (killed(15), "guest-reset", 143, None),
    ])
    def test_qemu(self, status, reason, code, says):
        got, message = qemu.exit_status(status, reason)
        assert got == code
        if says is None:
            assert message is None
        else:
            assert says in message

    @pytest.mark.parametrize("status,code,says", [
        (exited(0), 0, None),        # an i8042 reset: Unikraft's halt and crash alike, a triple fault too
        (exited(1), 1, "failed"),
        (exited(148), 148, "seccomp"),
        (exited(152), 152, "configuration"),
        (exited(42), 42, "status 42"),
        (killed(9), 137, None),
    ])
    def test_firecracker(self, status, code, says):
        got, message = firecracker.exit_status(status)
        assert got == code
        assert (message is None) if says is None else (says in message)

    def test_real_wait_statuses(self):
        """The mapping reads what os.waitpid really returns."""
        import subprocess as sp

        p = sp.Popen(["sh", "-c", "exit 83"])
        _, status = os.waitpid(p.pid, 0)
        p.returncode = 0
        assert qemu.exit_status(status) == (0, None)
        p = sp.Popen(["sleep", "30"])
        p.kill()
        _, status = os.waitpid(p.pid, 0)
        p.returncode = 0
        assert qemu.exit_status(status) == (137, None) and firecracker.exit_status(status) == (137, None)
