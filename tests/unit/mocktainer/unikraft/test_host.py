"""mocktainer.unikraft.host: the VMM binaries and KVM this host offers."""

import os

import pytest

from harness.unikernels import make_exe
from mocktainer.error import ConfigError
from mocktainer.unikraft import host, qemu


class TestBinaries:
    def test_path_first(self, tmp_path):
        make_exe(tmp_path / "qemu-system-x86_64")
        assert host.find_binary("qemu-system-x86_64", str(tmp_path)) == \
            str(tmp_path / "qemu-system-x86_64")

    def test_system_dirs_after_a_tiny_path(self, tmp_path):
        found = host.find_binary("sh", str(tmp_path))
        assert os.path.dirname(found) in host.SYSTEM_DIRS
        assert host.find_binary("sh", None) == found
        assert host.find_binary("sh", "") == found

    def test_not_executable_or_directory_skipped(self, tmp_path):
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        make_exe(a / "tool", mode=0o644)
        (b / "tool").mkdir()
        with pytest.raises(ConfigError, match="tool not found in PATH"):
            host.find_binary("tool", "%s:%s" % (a, b))

    def test_empty_path_entry_is_not_cwd(self, tmp_path, monkeypatch):
        make_exe(tmp_path / "tool")
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError):
            host.find_binary("tool", ":/nonexistent:")

    def test_qemu_binary_names_the_debian_package(self, tmp_path, monkeypatch):
        monkeypatch.setattr(host, "SYSTEM_DIRS", ())
        with pytest.raises(ConfigError, match=r"apt-get install qemu-system-arm") as e:
            qemu.qemu_binary("aarch64", str(tmp_path))
        assert "qemu-system-aarch64" in str(e.value)
        with pytest.raises(ConfigError, match=r"apt-get install qemu-system-x86\)"):
            qemu.qemu_binary("x86_64", str(tmp_path))
        with pytest.raises(ConfigError, match="no QEMU system emulator"):
            qemu.qemu_binary("riscv64", str(tmp_path))
        make_exe(tmp_path / "qemu-system-arm")
        assert qemu.qemu_binary("arm", str(tmp_path)) == str(tmp_path / "qemu-system-arm")


class TestKvm:
    def test_not_a_kvm_device(self, tmp_path):
        assert host.kvm_usable("/dev/null") is False
        assert host.kvm_usable(str(tmp_path / "kvm")) is False

    def test_real_device_matches_api_version(self):
        if not os.path.exists("/dev/kvm"):
            pytest.skip("no /dev/kvm")
        assert host.kvm_usable() in (True, False)
