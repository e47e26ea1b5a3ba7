"""runu.settings: the runu config file and RUNU_* knobs (on the library's generic settings)."""

import subprocess
import sys

import pytest

from conftest import SRC
from mocktainer.error import ConfigError
from mocktainer.unikraft import settings as library_settings
from runu import settings


class TestSettings:
    def write(self, tmp_path, text):
        path = tmp_path / "config.toml"
        path.write_text(text)
        return str(path)

    def test_values_and_sources(self, tmp_path):
        path = self.write(tmp_path, 'vmm = "firecracker"\nqemu_extra_args = ["-rtc", "base=utc"]\n'
                                    'firecracker_binary = "/opt/fc"\n')
        s = settings.load({"RUNU_CONFIG": path})
        assert s.path == path
        assert s.get("vmm") == ("firecracker", "vmm in %s" % path)
        assert s.get("qemu_extra_args") == (["-rtc", "base=utc"], "qemu_extra_args in %s" % path)
        assert s.get("qemu_cpu") == (None, None)

    def test_environment_overrides_the_file(self, tmp_path):
        path = self.write(tmp_path, 'vmm = "firecracker"\naccel = "kvm"\n')
        s = settings.load({"RUNU_CONFIG": path, "RUNU_VMM": "qemu", "RUNU_ACCEL": "tcg"})
        assert s.get("vmm") == ("qemu", "environment variable RUNU_VMM")
        assert s.get("accel") == ("tcg", "environment variable RUNU_ACCEL")
        assert s.get("accel", use_env=False) == ("kvm", "accel in %s" % path)

    def test_no_file(self, tmp_path, monkeypatch):
        assert settings.load({"RUNU_CONFIG": ""}).values == {}  # empty: no config file at all
        monkeypatch.setattr(settings, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
        assert settings.load({}).values == {}  # the default file may be missing
        with pytest.raises(ConfigError, match=r"runu config file .*/absent.toml \(environment variable "
                                              r"RUNU_CONFIG\) does not exist"):
            settings.load({"RUNU_CONFIG": str(tmp_path / "absent.toml")})

    def test_tomllib_only_when_there_is_a_file(self, tmp_path):
        code = ("import sys; sys.path.insert(0, %r)\nfrom runu import settings\n"
                "settings.load({'RUNU_CONFIG': sys.argv[1]})\nprint('tomllib' in sys.modules)" % SRC)
        absent = subprocess.run([sys.executable, "-I", "-c", code, ""], capture_output=True, text=True)
        assert absent.stdout.strip() == "False", absent.stderr
        present = subprocess.run([sys.executable, "-I", "-c", code, self.write(tmp_path, "")],
                                 capture_output=True, text=True)
        assert present.stdout.strip() == "True", present.stderr

    @pytest.mark.parametrize("text,match", [
        ('vmm = "qemu"\nvm = "x"\n', "unknown key 'vm'"),
        ("vmm = 3\n", "vmm must be a backend name, not 3"),
        ('qemu_extra_args = "-rtc base=utc"\n', "qemu_extra_args must be a list of strings"),
        ("qemu_extra_args = [1]\n", "qemu_extra_args must be a list of strings"),
        ("vmm = \n", "is not valid TOML"),
    ])
    def test_invalid(self, tmp_path, text, match):
        with pytest.raises(ConfigError, match=match):
            settings.load({"RUNU_CONFIG": self.write(tmp_path, text)})

    def test_directory(self, tmp_path):
        with pytest.raises(ConfigError, match="is a directory"):
            settings.load({"RUNU_CONFIG": str(tmp_path)})


class TestLibrarySettings:
    def test_names_no_variable_of_its_own(self):
        s = library_settings.Settings({"vmm": "qemu"}, "/etc/tool.toml", {"RUNU_VMM": "firecracker"})
        assert s.get("vmm") == ("qemu", "vmm in /etc/tool.toml")
        assert s.describe("vmm") == "vmm in /etc/tool.toml"
        assert "delegate" not in library_settings.KEYS

    def test_runu_names(self):
        s = settings.Settings({}, "/etc/runu/config.toml", {"RUNU_VMM": "firecracker"})
        assert s.get("vmm") == ("firecracker", "environment variable RUNU_VMM")
        assert s.describe("vmm") == "the environment variable RUNU_VMM or vmm in /etc/runu/config.toml"
