"""mocktainer.unikraft.firecracker: the VM configuration and the files it writes."""

import os

import pytest

from harness.unikernels import fake_kernel, make_exe
from mocktainer import error as mocktainer_error
from mocktainer.error import ConfigError
from mocktainer.unikraft import firecracker, host, vmm
from runu import settings


def fc_vm(kernel=None, annotations=None, environ=None, values=None, state_dir="/run/runu/fc-1",
          memory=64, vcpus=1, cmdline="exit=3 -- hi"):
    s = settings.Settings(values, "/etc/runu/config.toml", environ if environ is not None else {})
    return vmm.VM(kernel or fake_kernel(), cmdline, memory, vcpus, annotations or {}, s, state_dir,
                  os.path.basename(state_dir) if state_dir else None)


class TestFirecracker:
    def launch(self, vm, kvm=True, hw=True):
        return firecracker.launch(vm, kvm_check=lambda: kvm, hwvirt_check=lambda: hw)

    def fc(self, tmp_path):
        return str(make_exe(tmp_path / "firecracker"))

    def test_launch(self, tmp_path):
        fc = self.fc(tmp_path)
        k = fake_kernel(initrd="/bundle/rootfs/unikraft/bin/initrd")
        launch = self.launch(fc_vm(k, environ={"PATH": str(tmp_path)}, memory=48, vcpus=2))
        assert launch.args == [fc, "--api-sock", "/run/runu/fc-1/firecracker.sock", "--level", "Error", "--id", "fc-1"]
        assert launch.setup["socket"] == "/run/runu/fc-1/firecracker.sock"
        assert list(launch.files) == ["firecracker.json"]
        import json
        assert json.loads(launch.files["firecracker.json"]) == {
            "boot-source": {"kernel_image_path": "/bundle/rootfs/unikraft/bin/kernel",
                            "initrd_path": "/bundle/rootfs/unikraft/bin/initrd", "boot_args": "exit=3 -- hi"},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 48},
            "drives": [],
        }
        assert (launch.accel, launch.machine) == ("kvm", None)

    def test_empty_boot_args_are_kept_and_no_initrd(self, tmp_path):
        import json
        launch = self.launch(fc_vm(cmdline="", environ={"PATH": str(tmp_path)}))
        self.fc(tmp_path)
        boot = json.loads(launch.files["firecracker.json"])["boot-source"]
        assert boot == {"kernel_image_path": "/bundle/rootfs/unikraft/bin/kernel", "boot_args": ""}

    @pytest.mark.parametrize("cid", ["a_b", "a.b", "x" * 65])
    def test_id_firecracker_would_refuse_is_not_passed(self, tmp_path, cid):
        self.fc(tmp_path)
        assert "--id" not in self.launch(fc_vm(state_dir="/run/runu/" + cid, environ={"PATH": str(tmp_path)})).args

    def test_binary_settings(self, tmp_path):
        fc = self.fc(tmp_path)
        other = str(make_exe(tmp_path / "fc-other"))
        assert self.launch(fc_vm(values={"firecracker_binary": other}, environ={"PATH": str(tmp_path)})).args[0] \
            == other
        assert self.launch(fc_vm(values={"firecracker_binary": other},
                                 environ={"RUNU_FIRECRACKER_BINARY": fc})).args[0] == fc
        with pytest.raises(ConfigError) as e:
            self.launch(fc_vm(environ={"RUNU_FIRECRACKER_BINARY": "/nonexistent/firecracker"}))
        assert str(e.value) == ("environment variable RUNU_FIRECRACKER_BINARY names firecracker "
                                "'/nonexistent/firecracker', which cannot be used: /nonexistent/firecracker is "
                                "not an executable file")
        with pytest.raises(ConfigError, match="firecracker_binary in /etc/runu/config.toml names firecracker"):
            self.launch(fc_vm(values={"firecracker_binary": "/nonexistent/fc"}))

    def test_missing_binary_names_the_setting(self, tmp_path, monkeypatch):
        monkeypatch.setattr(host, "SYSTEM_DIRS", ())
        with pytest.raises(ConfigError) as e:
            self.launch(fc_vm(environ={"PATH": str(tmp_path)}))
        msg = str(e.value)
        assert msg.startswith("the firecracker VMM is needed but firecracker not found in PATH")
        assert "firecracker_binary" in msg and "RUNU_FIRECRACKER_BINARY" in msg and "setup-firecracker.sh" in msg

    @pytest.mark.parametrize("k,match", [
        (fake_kernel(protocol="linux", elf_class=None), "a Linux bzImage: put the uncompressed ELF vmlinux"),
        (fake_kernel(protocol="multiboot", elf_class=32), "only ELF64 kernels.*32-bit multiboot image"),
        (fake_kernel(protocol="pvh", elf_class=32), "only ELF64 kernels"),
        (fake_kernel(protocol="multiboot"), "a multiboot kernel without a PVH entry note"),
        (fake_kernel("aarch64", "elf"), "runs x86_64 kernels here"),
    ])
    def test_kernels_it_cannot_boot(self, tmp_path, k, match):
        self.fc(tmp_path)
        with pytest.raises(ConfigError, match=match) as e:
            self.launch(fc_vm(k, environ={"PATH": str(tmp_path)}))
        assert "org.unikraft.runu.vmm=qemu" in str(e.value)

    def test_kernels_it_boots(self, tmp_path):
        self.fc(tmp_path)
        for k in (fake_kernel(), fake_kernel(protocol="elf", linux=True), fake_kernel(protocol="elf"),
                  fake_kernel(protocol="pvh", linux=True)):
            assert self.launch(fc_vm(k, environ={"PATH": str(tmp_path)})).files

    def test_kvm(self, tmp_path):
        self.fc(tmp_path)
        env = {"PATH": str(tmp_path)}
        with pytest.raises(ConfigError, match=r"^the firecracker VMM needs KVM, but /dev/kvm is missing or not "
                                              r"usable .*: use the qemu VMM .* with TCG$"):
            self.launch(fc_vm(environ=env), kvm=False)
        with pytest.raises(ConfigError, match="Linux guests crash"):
            self.launch(fc_vm(fake_kernel(protocol="elf", linux=True), environ=env), hw=False)
        assert self.launch(fc_vm(environ=env), hw=False).args  # a unikernel runs without vmx/svm

    def test_accel_knob(self, tmp_path):
        self.fc(tmp_path)
        env = {"PATH": str(tmp_path)}
        for ann in ({"org.unikraft.runu.accel": "kvm"}, {"org.unikraft.runu.accel": "auto"}):
            assert self.launch(fc_vm(annotations=ann, environ=env)).accel == "kvm"
        with pytest.raises(ConfigError, match=r"^annotation org.unikraft.runu.accel='tcg' but the firecracker "
                                              r"VMM runs guests only under KVM"):
            self.launch(fc_vm(annotations={"org.unikraft.runu.accel": "tcg"}, environ=env))
        with pytest.raises(ConfigError, match=r"^environment variable RUNU_ACCEL='tcg' but"):
            self.launch(fc_vm(environ=dict(env, RUNU_ACCEL="tcg")))
        with pytest.raises(ConfigError, match="'warp' is not a valid accelerator"):
            self.launch(fc_vm(annotations={"org.unikraft.runu.accel": "warp"}, environ=env))

    def test_needs_a_state_directory(self, tmp_path):
        self.fc(tmp_path)
        with pytest.raises(ConfigError, match="needs the container's state directory"):
            self.launch(fc_vm(state_dir=None, environ={"PATH": str(tmp_path)}))

    def test_vcpus(self, tmp_path):
        self.fc(tmp_path)
        with pytest.raises(ConfigError, match="1 to 32 vCPUs"):
            self.launch(fc_vm(vcpus=33, environ={"PATH": str(tmp_path)}))


def test_runtime_writes_only_plain_vmm_files(tmp_path):
    from mocktainer import runtime
    runtime.write_files(str(tmp_path), {"firecracker.json": b"{}"})
    assert (tmp_path / "firecracker.json").read_bytes() == b"{}"
    assert (tmp_path / "firecracker.json").stat().st_mode & 0o777 == 0o600
    for bad in ("", "../x", "a/b", "state.json", "exec.fifo", ".."):
        with pytest.raises(ConfigError, match="invalid VMM file name"):
            runtime.write_files(str(tmp_path), {bad: b""})
    with pytest.raises(mocktainer_error.Error, match="cannot write"):
        runtime.write_files(str(tmp_path), {"firecracker.json": b"again"})  # never over an existing file
