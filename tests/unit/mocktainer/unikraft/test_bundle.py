"""mocktainer.unikraft.bundle: the guest command line, resources, sandboxes and the create-time plan."""

import os

import pytest

from harness.unikernels import (make_bzimage, make_elf, make_exe, make_rootfs, opt, runu_plan, unikraft_argv,
                                unikraft_view)
from mocktainer import error as mocktainer_error
from mocktainer.error import ConfigError
from mocktainer.unikraft import bundle, firecracker, host, qemu, vmm

AWKWARD = [
    "two words", "it's", 'say "hi"', "both ' and \"", "tab\there", "new\nline",
    "--flag=a b", "[", "]", "x]", "'", '"', "''", "-", "ünïcødé", "a=b", "$HOME", "\\", "--",
]


class TestCmdline:
    @pytest.mark.parametrize("entry", ["/unikraft/bin/kernel", "unikraft/bin/kernel",
                                       "./unikraft/bin/kernel", "//unikraft//bin/kernel"])
    def test_entrypoint_dropped(self, entry):
        assert bundle.guest_cmdline([entry, "hello", "world"]) == "hello world"

    def test_other_first_arg_kept(self):
        assert bundle.guest_cmdline(["/bin/app", "x"]) == "/bin/app x"
        assert bundle.guest_cmdline(["/unikraft/bin/kernel2"]) == "/unikraft/bin/kernel2"
        assert bundle.guest_cmdline([]) == ""
        assert bundle.guest_cmdline(["/unikraft/bin/kernel"]) == ""

    def test_kraftkit_empty_command(self):
        assert bundle.guest_cmdline(["/unikraft/bin/kernel", "--"]) == ""

    def test_params_and_env(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "vfs.fstab=x", "--", "/app", "-v"],
                                    ["PATH=/bin", "GREETING=hi there"])
        assert line == "env.vars=PATH=/bin 'env.vars=GREETING=hi there' vfs.fstab=x -- /app -v"
        assert unikraft_view(line) == (["PATH=/bin", "GREETING=hi there"], ["vfs.fstab=x"],
                                       ["/app", "-v"])

    def test_env_only(self):
        assert bundle.guest_cmdline(["/unikraft/bin/kernel"], ["A=1"]) == "env.vars=A=1 --"

    def test_app_double_dash_without_params_keeps_separator(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "-x", "--", "y"])
        assert line == "env.vars=[ ] -- -x -- y"
        assert unikraft_argv(line, False)[1:] == (["env.vars=[", "]"], ["-x", "--", "y"])

    @pytest.mark.parametrize("args,env", [([], []), (["a", "b"], []), ([], ["A=1"]), (["a"], ["A=1"]),
                                          (["-x", "--", "y"], []), (["--"], ["A=1"])])
    @pytest.mark.parametrize("program", [None, "/unikraft/bin/kernel"])
    def test_every_form_reads_exactly(self, args, env, program):
        """Rules 1 and 2: argv[0], then the parameters only when they are there, the args exactly."""
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--"] + args, env, program)
        argv0, params, app = unikraft_argv(line, program is not None)
        assert argv0 == (program or "kernel") and app == args
        assert [p for p in params if p.startswith("env.vars=") and p != "env.vars=["] == \
            ["env.vars=" + e for e in env]

    @pytest.mark.parametrize("args", [[], ["a", "b c"]])
    @pytest.mark.parametrize("env", [[], ["A=1", "B=x -- y"]])
    def test_firecracker_rewrite_keeps_the_nic_before_the_separator(self, args, env):
        """Rule 3: Firecracker's split at ` -- ` and insertion of virtio_mmio.device, modelled."""
        from mocktainer.unikraft import cmdline

        line = bundle.guest_line(["/unikraft/bin/kernel", "--"] + args, env, "/unikraft/bin/kernel")
        line.params.append("netdev.ip=10.0.0.2/24")
        text = cmdline.render(line, vmm_appends=True)
        head, sep, tail = text.partition(" -- ")
        dev = "virtio_mmio.device=4K@0xd0000000:5"
        booted = (head + " " + dev + " -- " + tail) if sep and tail.strip() else (head + " " + dev)
        argv0, params, app = unikraft_argv(booted)
        assert argv0 == "/unikraft/bin/kernel" and app == args
        assert dev in params and "netdev.ip=10.0.0.2/24" in params
        assert [p[9:] for p in params if p.startswith("env.vars=")] == env

    def test_program_name_and_backslash(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "a\\b"], [], "/unikraft/bin/kernel")
        assert line == "/unikraft/bin/kernel 'a\\b'"
        assert unikraft_argv(line) == ("/unikraft/bin/kernel", [], ["a\\b"])

    def test_initrd_fstab_unless_given(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "x"], [], None, initrd=True)
        assert line == "vfs.fstab=[ initrd0:/:extract::ramfs=1: ] -- x"
        own = bundle.guest_cmdline(["/unikraft/bin/kernel", "vfs.fstab=[ a ]", "--"], [], None, initrd=True)
        assert "initrd0" not in own
        assert bundle.guest_cmdline(["/unikraft/bin/kernel", "--", "x"], [], None) == "x"

    def test_env_at_risk(self):
        params = ["env.vars=V%d=%d" % (i, i) for i in range(7)] + ["env.vars=[", "A=1", "B=2]", "x.y=1"]
        assert bundle.env_at_risk(params) == ["B"]
        assert bundle.env_at_risk(["env.vars=[A=1]"] * 8) == []

    @pytest.mark.parametrize("word", AWKWARD)
    def test_awkward_word_round_trips(self, word):
        # (a parameter whose value starts with `[` opens a list: the user's to write)
        params = [] if word.startswith("[") else ["p.q=" + word]
        args = ["/unikraft/bin/kernel"] + params + ["--", "app", word, "end"]
        env = ["V=" + word, "W=" + word + "]"]
        line = bundle.guest_cmdline(args, env)
        assert unikraft_view(line) == (env, params, ["app", word, "end"])

    def test_all_awkward_at_once(self):
        line = bundle.guest_cmdline(["/unikraft/bin/kernel", "--"] + AWKWARD, ["X=" + "".join(AWKWARD)])
        assert unikraft_view(line) == (["X=" + "".join(AWKWARD)], [], AWKWARD)

    def test_quote(self):
        assert bundle.quote("plain") == "plain"
        assert bundle.quote("a b") == "'a b'"
        assert bundle.quote("it's") == "'it'\"'\"'s'"

    @pytest.mark.parametrize("args,env,match", [
        (["/unikraft/bin/kernel", ""], [], "empty string"),
        (["/unikraft/bin/kernel", "a\0b"], [], "NUL"),
        (["x"], ["NOEQUALS"], "NAME=value"),
        (["x"], ["=v"], "NAME=value"),
        (["x"], ["[=v"], "NAME=value"),
        (["x"], ["A=\0"], "NUL"),
    ])
    def test_inexpressible(self, args, env, match):
        with pytest.raises(ConfigError, match=match):
            bundle.guest_cmdline(args, env)


class TestResources:
    @pytest.mark.parametrize("limit,mib", [
        (None, 64), (-1, 64), (0, 64), (64 << 20, 64), ((64 << 20) + 1, 64), ((65 << 20) - 1, 64),
        (8 << 20, 8), (1 << 30, 1024),
    ])
    def test_memory(self, limit, mib):
        res = {} if limit is None else {"memory": {"limit": limit}}
        assert bundle.memory_mib(res) == mib

    @pytest.mark.parametrize("limit,overhead,mib", [
        (None, 64, 64), (-1, 16, 64), (128 << 20, 64, 64), ((128 << 20) + 12345, 64, 64),
        (72 << 20, 64, 8), (24 << 20, 16, 8), (1 << 30, 16, 1008),
    ])
    def test_memory_leaves_headroom_for_the_vmm(self, limit, overhead, mib):
        res = {} if limit is None else {"memory": {"limit": limit}}
        assert bundle.memory_mib(res, overhead, "qemu") == mib

    @pytest.mark.parametrize("limit", [1, 1 << 20, (7 << 20), (8 << 20) - 1])
    def test_memory_too_small(self, limit):
        with pytest.raises(ConfigError, match="at least 8 MiB"):
            bundle.memory_mib({"memory": {"limit": limit}})

    def test_memory_too_small_names_limit_and_minimum(self):
        with pytest.raises(ConfigError) as e:
            bundle.memory_mib({"memory": {"limit": 70 << 20}}, 64, "qemu")
        assert str(e.value) == (
            "memory limit of 73400320 bytes is too small for a qemu VM: runu keeps 64 MiB of it for qemu "
            "itself and the guest needs at least 8 MiB, so the limit must be at least 72 MiB (75497472 bytes); "
            "raise linux.resources.memory.limit")

    @pytest.mark.parametrize("limit", [True, "64M", 6.4e7, [1]])
    def test_memory_not_a_number(self, limit):
        with pytest.raises(ConfigError, match="whole number of bytes"):
            bundle.memory_mib({"memory": {"limit": limit}})

    def test_memory_section_wrong_type(self):
        with pytest.raises(ConfigError, match="linux.resources.memory in the OCI config must be an object"):
            bundle.memory_mib({"memory": 5})

    def test_vcpus(self):
        host = os.cpu_count()
        assert bundle.vcpu_count({}) == 1
        assert bundle.vcpu_count({"cpu": {"quota": 50000, "period": 100000}}) == 1
        assert bundle.vcpu_count({"cpu": {"quota": 150000, "period": 100000}}) == min(2, host)
        assert bundle.vcpu_count({"cpu": {"quota": -1, "period": 100000}}) == 1
        assert bundle.vcpu_count({"cpu": {"cpus": "0"}}) == 1
        assert bundle.vcpu_count({"cpu": {"cpus": "0-63"}}) == host
        with pytest.raises(ConfigError, match="not a CPU list"):
            bundle.vcpu_count({"cpu": {"cpus": "zero"}})


def sandbox_spec(args, env=None):
    return {"ociVersion": "1.0.2",
            "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
            "process": {"args": args, "env": env or ["PATH=/usr/bin:/bin"]}}


class TestSandbox:
    def rootfs(self, tmp_path):
        root = tmp_path / "rootfs"
        (root / "usr" / "bin").mkdir(parents=True)
        make_exe(root / "pause")
        make_exe(root / "usr" / "bin" / "pause2")
        return root

    def test_absolute(self, tmp_path):
        root = self.rootfs(tmp_path)
        p = runu_plan(sandbox_spec(["/pause", "-v"], ["PATH=/x", "A=b"]), str(root), {})
        assert p.kind == "sandbox"
        assert p.args == [str(root / "pause"), "-v"]
        assert p.env == ["PATH=/x", "A=b"]
        assert p.kernel is None

    def test_relative_path_and_path_lookup(self, tmp_path):
        root = self.rootfs(tmp_path)
        assert runu_plan(sandbox_spec(["./pause"]), str(root), {}).args == [str(root / "pause")]
        assert runu_plan(sandbox_spec(["pause2"]), str(root), {}).args == \
            [str(root / "usr/bin/pause2")]

    def test_symlinks_stay_inside(self, tmp_path):
        root = self.rootfs(tmp_path)
        os.symlink("/usr/bin/pause2", root / "abs-link")
        os.symlink("../../../../../../usr/bin/pause2", root / "rel-link")
        for link in ("/abs-link", "/rel-link"):
            assert runu_plan(sandbox_spec([link]), str(root), {}).args == \
                [str(root / "usr/bin/pause2")]
        os.symlink("/bin/sh", root / "escape")  # the host's /bin/sh exists, the rootfs' not
        with pytest.raises(ConfigError, match="does not exist in the bundle rootfs"):
            runu_plan(sandbox_spec(["/escape"]), str(root), {})
        with pytest.raises(ConfigError, match="does not exist"):
            runu_plan(sandbox_spec(["/../../../../bin/sh"]), str(root), {})

    def test_symlink_loop(self, tmp_path):
        root = self.rootfs(tmp_path)
        os.symlink("loop", root / "loop")
        with pytest.raises(ConfigError, match="too many levels"):
            runu_plan(sandbox_spec(["/loop"]), str(root), {})

    def test_errors(self, tmp_path):
        root = self.rootfs(tmp_path)
        with pytest.raises(ConfigError, match="empty process.args"):
            runu_plan(sandbox_spec([]), str(root), {})
        with pytest.raises(ConfigError, match="empty process.args"):
            runu_plan({"annotations": {"io.kubernetes.cri.container-type": "sandbox"}},
                        str(root), {})
        with pytest.raises(ConfigError, match="'/missing' does not exist"):
            runu_plan(sandbox_spec(["/missing"]), str(root), {})
        with pytest.raises(ConfigError, match="not found in the bundle rootfs"):
            runu_plan(sandbox_spec(["nothere"]), str(root), {})
        (root / "data").write_text("x")
        with pytest.raises(ConfigError, match="not an executable file"):
            runu_plan(sandbox_spec(["/data"]), str(root), {})
        with pytest.raises(ConfigError, match="not an executable file"):
            runu_plan(sandbox_spec(["/usr"]), str(root), {})

    def test_sandbox_wins_over_kernel(self, tmp_path):
        root = self.rootfs(tmp_path)
        (root / "unikraft" / "bin").mkdir(parents=True)
        (root / "unikraft" / "bin" / "kernel").write_bytes(b"garbage")
        assert runu_plan(sandbox_spec(["/pause"]), str(root), {}).kind == "sandbox"


class TestPlanUnikernel:
    def setup(self, tmp_path, data=None):
        root = make_rootfs(tmp_path, data if data is not None else make_elf(64, 62, pvh=True))
        bindir = tmp_path / "bin"
        bindir.mkdir()
        make_exe(bindir / "qemu-system-x86_64")
        return root, {"PATH": str(bindir), "RUNU_ACCEL": "tcg", "RUNU_CONFIG": ""}

    def test_plan(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"process": {"args": ["/unikraft/bin/kernel", "-v"], "env": ["A=1"]},
                "linux": {"resources": {"memory": {"limit": 164 << 20}}}}
        p = runu_plan(spec, str(root), environ)
        assert p.vmm == "qemu" and p.files == {}
        assert p.kind == "unikernel"
        assert p.args[0] == str(tmp_path / "bin" / "qemu-system-x86_64")
        assert p.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        assert p.cmdline == "/unikraft/bin/kernel env.vars=A=1 -- -v"  # PVH: argv[0] is runu's to write
        assert opt(p.args, "-append") == [p.cmdline]
        assert opt(p.args, "-m") == ["92M"] and p.memory_mib == 92  # 164 - 64 (QEMU) - 8 (its supervisor)
        assert opt(p.args, "-accel") == ["tcg,tb-size=32"] and p.accel == "tcg"
        assert opt(p.args, "-M") == ["microvm"] and p.machine == "microvm"
        assert opt(p.args, "-kernel") == [str(root / "unikraft/bin/kernel")]
        assert p.kernel.boot_protocol == "pvh"

    def test_guest_record_initrd_and_env_warning(self, tmp_path, monkeypatch):
        """What the guest network needs at start (the line's parts, machine, hostname, resolv.conf mount), the
        initrd's vfs.fstab, and the warning for env vars past the eighth."""
        _, environ = self.setup(tmp_path)
        # a kernel that links Unikraft's 9pfs (its file system name is in the image)
        root = make_rootfs(tmp_path, make_elf(64, 62, pvh=True) + b"lib9pfs\0", initrd=b"x", name="rootfs2")
        warnings = []
        monkeypatch.setattr(mocktainer_error, "warning_sink", warnings.append)
        env = ["V%d=%d" % (i, i) for i in range(9)]
        for d in ("old", "pod"):
            (tmp_path / d).mkdir()
            (tmp_path / d / "resolv.conf").write_text("nameserver 192.0.2.1\n")
        (tmp_path / "pod" / "hosts").write_text("127.0.0.1 localhost\n")
        pod, state = str(tmp_path / "pod"), str(tmp_path / "state" / "c1")
        # the mounts as the clients write them (bind mounts), so they are also shares for the guest (issue 14)
        spec = {"process": {"args": ["unikraft/bin/kernel", "--", "app"], "env": env}, "hostname": "web-1",
                "mounts": [{"destination": "/etc/resolv.conf", "source": str(tmp_path / "old" / "resolv.conf"),
                            "options": ["rbind", "ro"]},
                           {"destination": "/etc//resolv.conf/", "source": pod + "/resolv.conf", "type": "bind"},
                           {"destination": "/etc/hosts", "source": pod + "/hosts", "type": "bind"}]}
        p = runu_plan(spec, str(root), environ, state)
        # the initrd's root entry first (no user entry, no share on /), then the shares'
        assert p.guest == {"line": {"program": "unikraft/bin/kernel", "params": ["env.vars=" + e for e in env]
                                    + ["vfs.fstab=[", "initrd0:/:extract::ramfs=1:", "m0:/etc:9pfs:::mkmp", "]"],
                                    "args": ["app"], "linux": False},
                           "machine": "microvm", "hostname": "web-1", "resolv_conf": pod + "/resolv.conf"}
        assert p.cmdline.startswith("unikraft/bin/kernel env.vars=V0=0 ")
        assert p.cmdline.endswith(" vfs.fstab=[ initrd0:/:extract::ramfs=1: m0:/etc:9pfs:::mkmp ] -- app")
        assert len(warnings) == 1 and "at risk: V8" in warnings[0] and "only the first 8" in warnings[0]
        del spec["process"]["env"][8:]
        runu_plan(spec, str(root), environ, state)
        assert len(warnings) == 1  # 8 are fine

    def test_a_kernel_without_9pfs_gets_no_share(self, tmp_path, monkeypatch):
        """Unikraft stops at boot on a vfs.fstab entry whose file system it lacks (seen with a real 0.17
        build, docs/bundles.md): a kernel without the name "9pfs" gets no vfs.fstab entry and no 9p device
        for the mounts, and one warning naming them; its own parameters and the initrd's root stay."""
        _, environ = self.setup(tmp_path)
        root = make_rootfs(tmp_path, make_elf(64, 62, pvh=True), initrd=b"x", name="rootfs2")
        warnings = []
        monkeypatch.setattr(mocktainer_error, "warning_sink", warnings.append)
        (tmp_path / "vol").mkdir()
        (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
        spec = {"process": {"args": ["unikraft/bin/kernel", "--", "app"]},
                "mounts": [{"destination": "/data", "source": str(tmp_path / "vol"), "type": "bind"},
                           {"destination": "/etc/hosts", "source": str(tmp_path / "hosts"), "type": "bind"}]}
        p = runu_plan(spec, str(root), environ, str(tmp_path / "state" / "c1"))
        assert p.cmdline == "unikraft/bin/kernel vfs.fstab=[ initrd0:/:extract::ramfs=1: ] -- app"
        assert "-fsdev" not in p.args and "shares" not in p.setup
        assert len(warnings) == 1 and "no 9pfs file system" in warnings[0], warnings
        assert warnings[0].endswith("not shared with the guest: /data, /etc/hosts; build the image with "
                                    "CONFIG_LIB9PFS and CONFIG_LIBVIRTIO_9P to get them")
        # the same kernel with the name in it (the tail of "lib9pfs", as Unikraft's linker leaves it) gets both
        with open(root / "unikraft/bin/kernel", "ab") as f:
            f.write(b"lib9pfs\0")
        p = runu_plan(spec, str(root), environ, str(tmp_path / "state" / "c2"))
        assert p.cmdline.endswith(" vfs.fstab=[ initrd0:/:extract::ramfs=1: m0:/data:9pfs:::mkmp "
                                  "m1:/etc:9pfs:::mkmp ] -- app")
        assert len(warnings) == 1

    def test_multiboot_gets_no_program_name(self, tmp_path):
        root, environ = self.setup(tmp_path, make_elf(32, 3, multiboot_at=64))
        p = runu_plan({"process": {"args": ["/unikraft/bin/kernel", "a"]}}, str(root), environ)
        assert p.machine == "pc" and p.cmdline == "a" and p.guest["line"]["program"] is None

    def test_annotations(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"annotations": {"org.unikraft.runu.accel": "tcg", "org.unikraft.runu.machine": "pc"},
                "process": {"args": []}}
        p = runu_plan(spec, str(root), dict(environ, RUNU_ACCEL="kvm"))
        assert (p.accel, p.machine) == ("tcg", "pc")
        assert opt(p.args, "-append") == ["/unikraft/bin/kernel"]  # a PVH kernel on pc: argv[0] only

    def test_default_memory(self, tmp_path):
        root, environ = self.setup(tmp_path)
        assert runu_plan({"process": {"args": ["x"]}}, str(root), environ).memory_mib == 64

    def test_neither(self, tmp_path):
        (tmp_path / "rootfs").mkdir()
        with pytest.raises(ConfigError) as e:
            runu_plan({"process": {"args": ["/bin/sh"]}}, str(tmp_path / "rootfs"), {})
        msg = str(e.value)
        assert msg.startswith("runu runs unikernel bundles (rootfs/unikraft/bin/kernel) and CRI "
                              "sandbox containers")
        assert msg.endswith("%s has neither" % (tmp_path / "rootfs"))

    def test_bad_kernel_and_bad_spec(self, tmp_path):
        root, environ = self.setup(tmp_path, b"nope" * 100)
        with pytest.raises(ConfigError, match="not a kernel image"):
            runu_plan({"process": {"args": []}}, str(root), environ)
        with pytest.raises(ConfigError, match="process.args in the OCI config must be a list"):
            runu_plan({"process": {"args": "x"}}, str(root), environ)
        with pytest.raises(ConfigError, match="annotations in the OCI config must be an object"):
            runu_plan({"annotations": []}, str(root), environ)
        with pytest.raises(ConfigError, match="JSON object"):
            runu_plan([], str(root), environ)

    def test_missing_qemu(self, tmp_path, monkeypatch):
        root, environ = self.setup(tmp_path, make_elf(64, 183))
        monkeypatch.setattr(host, "SYSTEM_DIRS", ())
        with pytest.raises(ConfigError, match="qemu-system-aarch64 is needed.*qemu-system-arm"):
            runu_plan({"process": {"args": []}}, str(root), environ)


class TestLinuxCmdline:
    defaults = ("console=ttyS0", "panic=-1")

    def test_defaults_env_params_and_init_args(self):
        line = bundle.linux_cmdline(["/unikraft/bin/kernel", "quiet", "--", "hello", "two words"],
                                    ["PATH=/bin", "GREETING=hi there"], self.defaults)
        assert line == 'console=ttyS0 panic=-1 PATH=/bin "GREETING=hi there" quiet -- hello "two words"'

    def test_user_console_wins(self):
        # without "--" every word is /init's, as every word is the application's for Unikraft
        assert bundle.linux_cmdline(["console=hvc0", "panic=5"], [], self.defaults) == \
            "console=ttyS0 panic=-1 -- console=hvc0 panic=5"
        assert bundle.linux_cmdline(["console=hvc0", "panic=5", "--"], [], self.defaults) == \
            "console=hvc0 panic=5"

    def test_the_users_own_mount_word_adds_to_runus_shares(self):
        # runu's share words name devices the VM has: a user's runu.mount= must not drop them
        line = bundle.linux_cmdline(["runu.mount=mine:/x:rw", "--"], [], self.defaults, ["runu.mount=m0:/data:ro"])
        assert line == "console=ttyS0 panic=-1 runu.mount=m0:/data:ro runu.mount=mine:/x:rw"

    def test_nothing(self):
        assert bundle.linux_cmdline([], [], self.defaults) == "console=ttyS0 panic=-1"
        assert bundle.linux_cmdline(["/unikraft/bin/kernel"], []) == ""

    @pytest.mark.parametrize("args,env,match", [
        (["--", 'say "hi"'], [], "double quote"), (["--", ""], [], "empty string"),
        (["--", "a\0b"], [], "NUL byte"), ([], ["NOVALUE"], "not of the form NAME=value"),
    ])
    def test_inexpressible(self, args, env, match):
        with pytest.raises(ConfigError, match=match):
            bundle.linux_cmdline(args, env, self.defaults)


class TestPlanBackends:
    def setup(self, tmp_path, data=None, config=""):
        root = make_rootfs(tmp_path, data if data is not None else make_elf(64, 62, pvh=True))
        bindir = tmp_path / "bin"
        bindir.mkdir()
        make_exe(bindir / "qemu-system-x86_64")
        make_exe(bindir / "firecracker")
        cfg = tmp_path / "config.toml"
        cfg.write_text(config)
        return root, {"PATH": str(bindir), "RUNU_CONFIG": str(cfg)}

    def test_firecracker_plan(self, tmp_path, monkeypatch):
        import json
        monkeypatch.setattr(qemu, "kvm_usable", lambda device=None: True)
        monkeypatch.setattr(firecracker, "check_accel", lambda vm, *a: None)
        root, environ = self.setup(tmp_path)
        spec = {"annotations": {"org.unikraft.runu.vmm": "firecracker"},
                "process": {"args": ["/unikraft/bin/kernel", "exit=3"], "env": ["A=1"]},
                "linux": {"resources": {"memory": {"limit": 80 << 20}, "cpu": {"cpus": "0"}}}}
        p = runu_plan(spec, str(root), environ, "/run/runu/c1")
        assert p.vmm == "firecracker" and p.args[0] == str(tmp_path / "bin" / "firecracker")
        assert p.memory_mib == 80 - firecracker.OVERHEAD_MIB - vmm.SUPERVISOR_MIB == 56 and p.vcpus == 1
        config = json.loads(p.files["firecracker.json"])
        assert config["machine-config"] == {"vcpu_count": 1, "mem_size_mib": 56}
        assert config["boot-source"]["boot_args"] == p.cmdline == "/unikraft/bin/kernel env.vars=A=1 -- exit=3"

    def test_config_file_and_env_choose(self, tmp_path, monkeypatch):
        monkeypatch.setattr(firecracker, "check_accel", lambda vm, *a: None)
        root, environ = self.setup(tmp_path, config='vmm = "firecracker"\nqemu_cpu = "max,+pdpe1gb"\n'
                                                     'qemu_extra_args = ["-rtc", "base=utc"]\n')
        spec = {"process": {"args": []}}
        assert runu_plan(spec, str(root), environ, "/run/runu/c1").vmm == "firecracker"
        p = runu_plan(spec, str(root), dict(environ, RUNU_VMM="qemu", RUNU_ACCEL="tcg"), "/run/runu/c1")
        assert p.vmm == "qemu" and p.files == {}
        assert opt(p.args, "-cpu") == ["max,+pdpe1gb"] and opt(p.args, "-rtc") == ["base=utc"]
        spec = {"annotations": {"org.unikraft.runu.vmm": "qemu", "org.unikraft.runu.qemu.cpu": "qemu64",
                                "org.unikraft.runu.qemu.extra-args": '["-msg", "timestamp=on"]'},
                "process": {"args": []}}
        p = runu_plan(spec, str(root), dict(environ, RUNU_ACCEL="tcg"))
        assert opt(p.args, "-cpu") == ["qemu64"]
        assert opt(p.args, "-rtc") == ["base=utc"] and opt(p.args, "-msg") == ["timestamp=on"]

    @pytest.mark.parametrize("annotations,match", [
        ({"org.unikraft.runu.vmm": "vmware"}, "annotation org.unikraft.runu.vmm='vmware' is not a VMM runu knows"),
        ({"org.unikraft.runu.qemu.cpu": "max -monitor stdio"}, "annotation org.unikraft.runu.qemu.cpu="),
        ({"org.unikraft.runu.qemu.extra-args": "-monitor stdio"},
         "annotation org.unikraft.runu.qemu.extra-args: QEMU option '-monitor' is not allowed"),
        ({"org.unikraft.runu.qemu.extra-args": '["-device", "loader,file=/etc/shadow"]'},
         "-device 'loader' is not allowed"),
    ])
    def test_bad_annotations(self, tmp_path, annotations, match):
        root, environ = self.setup(tmp_path)
        with pytest.raises(ConfigError, match=match):
            runu_plan({"annotations": annotations, "process": {"args": []}}, str(root),
                        dict(environ, RUNU_ACCEL="tcg"))

    def test_bad_config_file(self, tmp_path):
        root, environ = self.setup(tmp_path, config='qemu_extra_args = ["-qmp", "stdio"]\n')
        with pytest.raises(ConfigError, match=r"^qemu_extra_args in .*config.toml: QEMU option '-qmp'"):
            runu_plan({"process": {"args": []}}, str(root), dict(environ, RUNU_ACCEL="tcg"))

    def test_sandbox_ignores_the_vmm_settings(self, tmp_path):
        root = tmp_path / "rootfs"
        root.mkdir()
        make_exe(root / "pause")
        spec = dict(sandbox_spec(["/pause"]), annotations={"io.kubernetes.cri.container-type": "sandbox",
                                                           "org.unikraft.runu.vmm": "nope"})
        p = runu_plan(spec, str(root), {"RUNU_CONFIG": str(tmp_path / "absent.toml")})
        assert p.kind == "sandbox" and p.files == {}

    def test_linux_bzimage_under_qemu(self, tmp_path):
        root, environ = self.setup(tmp_path, make_bzimage())
        p = runu_plan({"process": {"args": ["/unikraft/bin/kernel", "--", "hi"], "env": ["PATH=/bin"]}},
                        str(root), dict(environ, RUNU_ACCEL="tcg"))
        assert p.kernel.linux and p.machine == "pc"
        assert p.memory_mib == bundle.DEFAULT_LINUX_MEMORY_MIB  # no limit: enough for a distribution kernel
        assert opt(p.args, "-append") == ["console=ttyS0 panic=-1 PATH=/bin -- hi"]
        assert "-no-reboot" in p.args
        assert "pvpanic" in opt(p.args, "-device") and opt(p.args, "-action") == ["panic=exit-failure"]

    def test_linux_vmlinux_under_firecracker(self, tmp_path, monkeypatch):
        import json
        monkeypatch.setattr(firecracker, "check_accel", lambda vm, *a: None)
        root, environ = self.setup(tmp_path, make_elf(64, 62, linux_note=True))
        p = runu_plan({"annotations": {"org.unikraft.runu.vmm": "firecracker"},
                         "process": {"args": ["console=hvc0", "--", "x"]}}, str(root), environ, "/s/c")
        assert json.loads(p.files["firecracker.json"])["boot-source"]["boot_args"] == \
            "reboot=k panic=1 pci=off console=hvc0 -- x"

    def test_memory_below_the_minimum_names_the_backend(self, tmp_path):
        root, environ = self.setup(tmp_path)
        spec = {"process": {"args": []}, "linux": {"resources": {"memory": {"limit": 64 << 20}}}}
        with pytest.raises(ConfigError, match="too small for a qemu VM: runu keeps 72 MiB .* at least 80 MiB"):
            runu_plan(spec, str(root), dict(environ, RUNU_ACCEL="tcg"))
        spec["annotations"] = {"org.unikraft.runu.vmm": "firecracker"}
        spec["linux"]["resources"]["memory"]["limit"] = 20 << 20
        with pytest.raises(ConfigError, match="too small for a firecracker VM: .* at least 32 MiB"):
            runu_plan(spec, str(root), environ, "/s/c")
