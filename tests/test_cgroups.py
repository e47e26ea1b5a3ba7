"""cgroups: cgroupsPath parsing (cgroupfs and systemd forms), v1/hybrid/v2 detection, limit values, and
placement and limits read back from /proc/<pid>/cgroup and the cgroup files, through the library and runu.

Every cgroup an integration test makes lives below a top directory unique to the test (`/mtcg-<pid>-<hex>`,
a slice `mtcg<hex>.slice`, or a relative `mtcg-<pid>-<hex>` below runu's own cgroup); the `cg` fixture removes
those trees in every hierarchy afterwards, killing anything left in them, even when the test failed.
"""

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

import mocktainer
from mocktainer import cgroups, configs, specconv
from mocktainer.cgroups import Host, Limits, cgroup_mode, inner_path, parse_mountinfo, parse_proc_cgroup

from conftest import SRC, needs_root
from harness.fs import remove_cgroup_dirs
from harness.runu import RUNU_LIBRARY, Runtime, alive, spec, wait_exit, wait_for, write_bundle

# ---- cgroupsPath: cgroupfs -------------------------------------------------------------------


@pytest.mark.parametrize("given, inner", [
    ("/a/b", "/a/b"),
    ("/a//b/./c/", "/a/b/c"),
    ("/../../a/../b", "/b"),
    ("//a", "/a"),
    ("a/b", "a/b"),
    ("../../x/y", "x/y"),
    ("./a/../b", "b"),
    ("kubepods/burstable/pod1/c1", "kubepods/burstable/pod1/c1"),
    ("a:b", "a:b"),  # colons are ordinary characters of a cgroupfs path ...
    ("/x.slice:p:n", "/x.slice:p:n"),  # ... even in systemd's shape, when the path has a '/'
])
def test_cgroupfs_paths(given, inner):
    assert inner_path(given, "id") == inner


def test_cgroupfs_default_is_runu_slash_id():
    assert inner_path("", "web-1", parent="runu") == "/runu/web-1"  # the parent runu names
    assert inner_path("", "web-1") == "/mocktainer/web-1"  # a library caller that names none


@pytest.mark.parametrize("given", ["/", "//", "/..", ".", "a/..", "../"])
def test_cgroupfs_path_naming_the_root_is_refused(given):
    with pytest.raises(mocktainer.ConfigError, match="root"):
        inner_path(given, "id")


@pytest.mark.parametrize("given", ["system.slice:runu:c1", ":runu:c1", "kubepods-pod1.slice:cri-containerd:abc"])
def test_systemd_form_without_the_flag_is_refused(given):
    with pytest.raises(mocktainer.ConfigError, match="--systemd-cgroup"):
        inner_path(given, "c1")


@pytest.mark.parametrize("given", [5, ["/a"], "/a\0b"])
def test_cgroupfs_path_of_the_wrong_kind(given):
    with pytest.raises(mocktainer.ConfigError, match="cgroupsPath"):
        inner_path(given, "id")


# ---- cgroupsPath: systemd slice:prefix:name --------------------------------------------------

@pytest.mark.parametrize("given, inner", [
    ("system.slice:runu:c1", "/system.slice/runu-c1.scope"),
    ("system.slice:docker:1234", "/system.slice/docker-1234.scope"),
    ("a-b.slice:p:n", "/a.slice/a-b.slice/p-n.scope"),
    ("kubepods-burstable-pod9.slice:cri-containerd:abc",
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod9.slice/cri-containerd-abc.scope"),
    ("-.slice:p:n", "/p-n.scope"),
    (":p:n", "/system.slice/p-n.scope"),
    ("user.slice::n", "/user.slice/n.scope"),
    ("machine.slice:p:sub-x.slice", "/machine.slice/sub-x.slice"),  # a name that is a slice is used as is
    ("", "/system.slice/runu-ID.scope"),  # the default, with the parent runu names
])
def test_systemd_paths(given, inner):
    assert inner_path(given, "ID", systemd=True, parent="runu") == inner


def test_systemd_default_of_a_library_caller():
    assert inner_path("", "ID", systemd=True) == "/system.slice/mocktainer-ID.scope"


@pytest.mark.parametrize("given, words", [
    ("/a/b", "slice:prefix:name"),
    ("a:b", "slice:prefix:name"),
    ("a:b:c:d", "slice:prefix:name"),
    ("foo:p:n", "invalid systemd slice"),
    (".slice:p:n", "invalid systemd slice"),
    ("a--b.slice:p:n", "empty component"),
    ("-a.slice:p:n", "empty component"),
    ("a-.slice:p:n", "empty component"),
    ("a/b.slice:p:n", "invalid systemd slice"),
    ("system.slice:p:", "unit name"),
    ("system.slice:p:a/b", "unit name"),
    ("system.slice:p:..", "unit name"),
    ("system.slice:a/b:n", "prefix"),
])
def test_invalid_systemd_paths(given, words):
    with pytest.raises(mocktainer.ConfigError) as e:
        inner_path(given, "ID", systemd=True)
    assert words in str(e.value)


def test_expand_slice():
    assert cgroups.expand_slice("system.slice") == "/system.slice"
    assert cgroups.expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert cgroups.expand_slice("-.slice") == "/"


# ---- detection -------------------------------------------------------------------------------

HYBRID = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb
"""

PURE_V2 = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

LEGACY = """\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 /docker/abc /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/my\\040cgroups rw shared:16 - cgroup cgroup rw,pids,clone_children
"""


def test_detect_hybrid():
    mounts = parse_mountinfo(HYBRID)
    assert cgroup_mode(mounts) == "hybrid"
    host = Host(mounts, unified_controllers=[])
    assert list(host.hierarchies()) == ["cpu", "cpuacct", "cpuset", "memory", "pids", "name=systemd", ""]
    assert host.unified.mountpoint == "/sys/fs/cgroup/unified"
    assert host.where("memory") == "memory" and host.where("hugetlb") == "hugetlb" and host.where("io") is None
    # A controller left on the v2 side of a hybrid host is written there.
    host = Host([m for m in mounts if "memory" not in m.controllers], unified_controllers=["memory", "io"])
    assert host.where("memory") == "" and host.where("cpu") == "cpu"


def test_detect_pure_v2():
    mounts = parse_mountinfo(PURE_V2)
    assert cgroup_mode(mounts) == "v2"
    host = Host(mounts, {"": "/user.slice/session-1.scope"}, unified_controllers=["cpu", "memory", "pids"])
    assert list(host.hierarchies()) == [""]
    assert host.where("memory") == "" and host.where("cpuset") is None
    assert host.path("", "/a/b") == "/sys/fs/cgroup/a/b"
    # relative: below the parent of our own cgroup, as runc does on v2
    assert host.path("", "c/d") == "/sys/fs/cgroup/user.slice/c/d"


def test_detect_legacy_v1():
    mounts = parse_mountinfo(LEGACY)
    assert cgroup_mode(mounts) == "v1"
    assert [sorted(m.controllers) for m in mounts] == [["name=systemd"], ["cpu", "cpuacct"], ["memory"], ["pids"]]
    assert mounts[3].mountpoint == "/sys/fs/cgroup/my cgroups"
    own = parse_proc_cgroup("5:pids:/u\n4:memory:/docker/abc/inner\n3:cpu,cpuacct:/u\n1:name=systemd:/u\n")
    host = Host(mounts, own)
    assert host.path("cpu", "/x") == host.path("cpuacct", "/x") == "/sys/fs/cgroup/cpu,cpuacct/x"
    assert host.path("pids", "/x") == "/sys/fs/cgroup/my cgroups/x"
    assert host.path("cpu", "rel") == "/sys/fs/cgroup/cpu,cpuacct/u/rel"
    # the memory mount shows /docker/abc as its root: our cgroup below it is inner/
    assert host.path("memory", "rel") == "/sys/fs/cgroup/memory/inner/rel"
    with pytest.raises(mocktainer.CgroupError, match="outside"):
        Host(mounts, dict(own, memory="/elsewhere")).path("memory", "rel")


def test_detect_nothing():
    assert cgroup_mode(parse_mountinfo("22 27 0:21 / /proc rw - proc proc rw\n")) == "none"


def test_parse_proc_cgroup():
    text = "10:hugetlb:/\n9:name=systemd:/a\n3:cpu,cpuacct:/b\n0::/c\n"
    assert parse_proc_cgroup(text) == {"hugetlb": "/", "name=systemd": "/a", "cpu": "/b", "cpuacct": "/b", "": "/c"}


def test_this_host_is_detected():
    host = Host.current()
    with open("/proc/self/mountinfo") as f:
        text = f.read()
    v1 = " - cgroup " in text
    v2 = " - cgroup2 " in text
    assert host.mode == {(True, True): "hybrid", (True, False): "v1", (False, True): "v2"}.get((v1, v2), "none")


# ---- limits ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shares, weight", [(0, 0), (1, 1), (2, 1), (3, 2), (512, 59), (1024, 100), (2048, 174),
                                            (4096, 303), (262143, 10000), (262144, 10000), (10 ** 6, 10000)])
def test_shares_to_weight_as_runc(shares, weight):
    assert cgroups.shares_to_weight(shares) == weight


FULL = {"memory": {"limit": 256 << 20, "reservation": 128 << 20, "swap": 512 << 20},
        "cpu": {"shares": 512, "quota": 150000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 64},
        "devices": [{"allow": False, "access": "rwm"}], "hugepageLimits": [], "network": {"classID": 1}}


def test_limit_files_v1():
    assert Limits(FULL).v1() == {
        "memory": [("memory.limit_in_bytes", str(256 << 20)), ("memory.memsw.limit_in_bytes", str(512 << 20)),
                   ("memory.soft_limit_in_bytes", str(128 << 20))],
        "cpu": [("cpu.shares", "512"), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "150000")],
        "cpuset": [("cpuset.cpus", "0-1"), ("cpuset.mems", "0")],
        "pids": [("pids.max", "64")],
    }


def test_limit_files_v2():
    assert Limits(FULL).v2() == {
        "memory": [("memory.max", str(256 << 20)), ("memory.swap.max", str(256 << 20)),
                   ("memory.low", str(128 << 20))],
        "cpu": [("cpu.weight", "59"), ("cpu.max", "150000 100000")],
        "cpuset": [("cpuset.cpus", "0-1"), ("cpuset.mems", "0")],
        "pids": [("pids.max", "64")],
    }


@pytest.mark.parametrize("resources, v1, v2", [
    ({}, {}, {}),
    ({"memory": {"limit": 0}, "cpu": {"shares": 0, "quota": 0}, "pids": {"limit": 0}}, {}, {}),  # zero: unset
    ({"memory": {"limit": -1}}, {"memory": [("memory.limit_in_bytes", "-1")]}, {"memory": [("memory.max", "max")]}),
    ({"memory": {"limit": -1, "swap": -1}},
     {"memory": [("memory.limit_in_bytes", "-1"), ("memory.memsw.limit_in_bytes", "-1")]},
     {"memory": [("memory.max", "max"), ("memory.swap.max", "max")]}),
    ({"cpu": {"quota": -1}}, {"cpu": [("cpu.cfs_quota_us", "-1")]}, {"cpu": [("cpu.max", "max 100000")]}),
    ({"cpu": {"quota": 20000}}, {"cpu": [("cpu.cfs_quota_us", "20000")]}, {"cpu": [("cpu.max", "20000 100000")]}),
    ({"cpu": {"period": 50000}}, {"cpu": [("cpu.cfs_period_us", "50000")]}, {"cpu": [("cpu.max", "max 50000")]}),
    ({"pids": {"limit": -1}}, {"pids": [("pids.max", "max")]}, {"pids": [("pids.max", "max")]}),
])
def test_limit_values(resources, v1, v2):
    assert Limits(resources).v1() == v1
    assert Limits(resources).v2() == v2


@pytest.mark.parametrize("resources, words", [
    ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit must be an integer"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit must be an integer"),
    ({"memory": {"limit": 1.5}}, "linux.resources.memory.limit must be an integer"),
    ({"cpu": {"cpus": 3}}, "linux.resources.cpu.cpus must be a string"),
    ({"cpu": {"shares": -5}}, "linux.resources.cpu.shares must not be negative"),
    ({"cpu": []}, "linux.resources.cpu must be an object"),
    ({"pids": {"limit": "x"}}, "linux.resources.pids.limit must be an integer"),
    ({"memory": {"limit": 100, "swap": 50}}, "memory.swap"),
])
def test_invalid_resources(resources, words):
    with pytest.raises(mocktainer.ConfigError, match=words.replace(".", r"\.")):
        cgroups.check_resources(resources)


def test_specconv_keeps_cgroups_path_and_resources():
    s = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["x"]},
         "linux": {"cgroupsPath": "/k/p", "resources": FULL}}
    c = specconv.create_config(s, "/b")
    assert (c.cgroups_path, c.resources, c.systemd_cgroup) == ("/k/p", FULL, False)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["cgroups_path"] == "/k/p" and d["resources"] == FULL and d["systemd_cgroup"] is False
    assert configs.Config.from_dict(d) == c
    assert specconv.create_config(dict(s, linux={}), "/b").cgroups_path == ""
    for bad in ({"cgroupsPath": 3}, {"resources": []}, {"resources": {"memory": {"limit": "x"}}}):
        with pytest.raises(mocktainer.ConfigError):
            specconv.create_config(dict(s, linux=bad), "/b")


# ---- create/remove on a made-up cgroup v2 tree (this host has no v2 controllers to test with) --

def test_v2_tree(tmp_path, caplog):
    """Pure v2: controllers enabled in the ancestors' subtree_control, v2 files written, the pid moved in."""
    mnt = tmp_path / "cg"
    leaf = mnt / "k" / "c1"
    leaf.mkdir(parents=True)
    for d in (mnt, mnt / "k"):
        (d / "cgroup.subtree_control").write_text("")
    for name in ("cgroup.procs", "memory.max", "memory.low", "cpu.weight", "cpu.max", "pids.max"):
        (leaf / name).write_text("")
    host = Host([cgroups.Mount(str(mnt), "/", 2)], {"": "/"}, unified_controllers=["memory", "cpu", "pids"])
    res = {"memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 2 << 30}, "cpu": {"shares": 2048,
           "quota": 50000, "period": 100000, "cpus": "0"}, "pids": {"limit": 7}}
    with caplog.at_level(logging.WARNING, logger="mocktainer"):
        paths = cgroups.create("c1", "/k/c1", False, res, 4242, host=host)
    assert paths == {"": str(leaf)}
    assert (leaf / "cgroup.procs").read_text() == "4242"
    assert (leaf / "memory.max").read_text() == str(1 << 30)
    assert (leaf / "memory.low").read_text() == str(1 << 29)
    assert (leaf / "cpu.weight").read_text() == "174"
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    assert (leaf / "pids.max").read_text() == "7"
    # each needed controller is enabled from the root down to the leaf's parent (one write each here)
    for d in (mnt, mnt / "k"):
        assert (d / "cgroup.subtree_control").read_text() in ("+pids", "+memory", "+cpu")
    text = caplog.text
    assert "memory.swap.max" in text  # no such file: a warning, not a failure
    assert "cpuset limits not applied: no cpuset controller" in text
    assert cgroups.pids(paths) == [4242]


def test_a_partly_made_path_is_removed_again(tmp_path, caplog):
    """A level that cannot be made (here: a name too long) leaves none of the levels made before it."""
    mounts = [cgroups.Mount(str(tmp_path / c), "/", 1, [c]) for c in ("memory", "pids")]
    for m in mounts:
        os.mkdir(m.mountpoint)
    with caplog.at_level(logging.WARNING, logger="mocktainer"):
        with pytest.raises(mocktainer.CgroupError, match="in any hierarchy.*name too long"):
            cgroups.create("c1", "/made/" + "n" * 300, False, {}, 1, host=Host(mounts))
    assert caplog.text.count("File name too long") == 2
    assert [os.listdir(m.mountpoint) for m in mounts] == [[], []]


def test_no_cgroup_hierarchy(caplog):
    host = Host([])
    with caplog.at_level(logging.WARNING, logger="mocktainer"):
        assert cgroups.create("c1", "", False, {}, 1, host=host) == {}
    assert "not confined" in caplog.text
    with pytest.raises(mocktainer.CgroupError, match="no cgroup hierarchy"):
        cgroups.create("c1", "/given", False, {}, 1, host=host)


def test_remove_refuses_a_hierarchy_root(caplog):
    root = Host.current().mounts[0].mountpoint if Host.current().mounts else "/proc"
    with caplog.at_level(logging.WARNING, logger="mocktainer"):
        cgroups.remove({"x": root, "y": "relative/path"})
    assert caplog.text.count("not removing") == 2
    assert os.path.isdir(root)


def test_runu_state_does_not_load_cgroups(tmp_path):
    """state reads cgroup_paths from state.json like any other field; the cgroups module stays unloaded."""
    root = tmp_path / "root"
    (root / "c1").mkdir(parents=True)
    st = mocktainer.State(id="c1", config=configs.Config(rootfs="/"), cgroup_paths={"memory": "/nope"})
    (root / "c1" / "state.json").write_text(json.dumps(st.to_dict()))
    probe = (f"import sys; sys.path.insert(0, {SRC!r}); from runu.main import main; import io; "
             f"sys.stdout = io.StringIO(); rc = main(['--root', {str(root)!r}, 'state', 'c1']); "
             f"sys.stdout = sys.__stdout__; print(rc, 'mocktainer.cgroups' in sys.modules)")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True)
    assert r.stdout.split() == ["0", "False"], r


# ---- integration: real cgroups ---------------------------------------------------------------

def proc_cgroup(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/cgroup") as f:
        out = {}
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
        return out


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


class Cg:
    """Unique cgroup names for one test and the removal of everything below them in every hierarchy."""

    def __init__(self):
        self.token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.tops: list[str] = []
        self.prune: list[str] = []  # parents to rmdir afterwards if they are left empty (e.g. /runu)

    def top(self, relative: bool = False) -> str:
        """A fresh top-level cgroup name: `/mtcg-...` (absolute) or `mtcg-...` (below runu's own cgroup)."""
        name = f"mtcg-{self.token}-{len(self.tops)}"
        self.tops.append(name if relative else "/" + name)
        return self.tops[-1]

    def slice(self) -> str:
        """A slice name for --systemd-cgroup, nested one level (`mtcgX-sub.slice`): its tree is cleaned too."""
        base = f"mtcg{self.token.replace('-', '')}{len(self.tops)}"
        self.tops.append(f"/{base}.slice")
        return f"{base}-sub.slice"

    def dirs(self, inner: str) -> dict[str, str]:
        host = Host.current()
        return {k: host.path(k, inner) for k in host.hierarchies()}

    def cleanup(self):
        host = Host.current()
        for top in self.tops:
            places = set(self.dirs(top).values())
            if top.startswith("/"):
                places |= {os.path.join(m.mountpoint, top[1:]) for m in host.mounts}
            remove_cgroup_dirs(sorted(places), kill=True, timeout=1.0)
        for parent in self.prune:
            for m in host.mounts:
                try:
                    os.rmdir(os.path.join(m.mountpoint, parent.lstrip("/")))
                except OSError:
                    pass


@pytest.fixture
def cg():
    c = Cg()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def rt(tmp_path):
    r = Runtime("runu-library", str(tmp_path))  # the library's cgroup code, with a cheap plain process
    try:
        yield r
    finally:
        r.cleanup()


RES = {"memory": {"limit": 200 << 20}, "cpu": {"quota": 50000, "period": 100000, "shares": 512, "cpus": "0"},
       "pids": {"limit": 20}}


def sandbox(tmp_path, name="bundle", cgroups_path=None, resources=None, **kw):
    s = spec(**kw)
    if cgroups_path is not None:
        s["linux"]["cgroupsPath"] = cgroups_path
    if resources is not None:
        s["linux"]["resources"] = resources
    return write_bundle(str(tmp_path / name), s)


def assert_placed(pid: int, inner: str, dirs: dict[str, str]) -> None:
    """`pid` is in cgroup `inner` in every hierarchy it joined (by /proc/<pid>/cgroup and cgroup.procs)."""
    mine = proc_cgroup(pid)
    for key, path in dirs.items():
        assert pid in cgroups.read_pids(path), (key, path)
        assert mine[key].endswith(inner.lstrip("/")), (key, mine[key], inner)


def assert_limits(dirs: dict[str, str]) -> None:
    """RES as this host's v1 controllers show it."""
    assert read(dirs["memory"] + "/memory.limit_in_bytes") == str(200 << 20)
    assert read(dirs["cpu"] + "/cpu.cfs_quota_us") == "50000"
    assert read(dirs["cpu"] + "/cpu.cfs_period_us") == "100000"
    assert read(dirs["cpu"] + "/cpu.shares") == "512"
    assert read(dirs["cpuset"] + "/cpuset.cpus") == "0"
    assert read(dirs["pids"] + "/pids.max") == "20"


def joined(dirs: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in dirs.items() if os.path.isdir(v)}


V1_LIMITS = pytest.mark.skipif(any(Host.current().where(c) != c for c in ("memory", "cpu", "cpuset", "pids")),
                               reason="the limit read-backs expect memory, cpu, cpuset and pids on cgroup v1")


@needs_root
@pytest.mark.integration
@V1_LIMITS
@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_library_places_the_init_before_it_runs_anything(state_root, bundle, cg, monkeypatch, mode):
    from mocktainer import process

    monkeypatch.setattr(process, "INIT_MODE", mode)
    inner = cg.top() + "/lib"
    cfg = configs.Config(rootfs=os.path.join(bundle, "rootfs"), cgroups_path=inner, resources=RES)
    c = mocktainer.create(state_root, "c1", cfg)
    p = mocktainer.Process(args=["/bin/busybox", "sleep", "30"], env=["PATH=/bin"])
    c.start(p)
    dirs = cg.dirs(inner)
    # CREATED: the init itself (it has not executed the program yet) is already in the cgroup
    assert_placed(p.pid(), inner, dirs)
    assert_limits(dirs)
    assert c.state().cgroup_paths == dirs
    with open(os.path.join(state_root, "c1", "state.json")) as f:
        assert json.load(f)["cgroup_paths"] == dirs
    c.exec()
    wait_for(lambda: read(f"/proc/{p.pid()}/comm") == "busybox", what="the program to run")
    assert_placed(p.pid(), inner, dirs)
    assert cgroups.pids(dirs) == [p.pid()]
    p.signal(signal.SIGKILL)
    p.wait()
    c.destroy()
    assert joined(dirs) == {}
    assert os.path.isdir(os.path.dirname(dirs["memory"]))  # only the leaf is removed


@needs_root
@pytest.mark.integration
def test_library_failed_start_leaves_no_cgroup(state_root, bundle, cg):
    inner = cg.top() + "/fail"
    s = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["true"]},
         "linux": {"cgroupsPath": inner}, "hooks": {"createRuntime": [{"path": "/bin/false"}]}}
    c = mocktainer.create(state_root, "c1", specconv.create_config(s, bundle))
    with pytest.raises(mocktainer.HookError):
        c.start(mocktainer.Process(args=["/bin/true"]))
    assert joined(cg.dirs(inner)) == {}


@needs_root
@pytest.mark.integration
def test_library_destroy_kills_nothing_and_keeps_state_while_processes_remain(state_root, bundle, cg):
    inner = cg.top() + "/busy"
    cfg = configs.Config(rootfs=os.path.join(bundle, "rootfs"), cgroups_path=inner)
    c = mocktainer.create(state_root, "c1", cfg)
    p = mocktainer.Process(args=["/bin/true"])
    c.start(p)
    c.exec()
    p.wait()
    stray = subprocess.Popen(["sleep", "30"])
    try:
        dirs = c.state().cgroup_paths
        with open(os.path.join(dirs["pids"], "cgroup.procs"), "w") as f:
            f.write(str(stray.pid))
        t = time.monotonic()
        with pytest.raises(mocktainer.CgroupError, match=f"processes {stray.pid} are still in it"):
            c.destroy()
        assert time.monotonic() - t < 3  # retried briefly, then gave up
        assert stray.poll() is None  # killed nothing
        assert os.path.exists(os.path.join(state_root, "c1", "state.json"))
        assert mocktainer.load(state_root, "c1").status() == "stopped"
    finally:
        stray.kill()
        stray.wait()
    mocktainer.load(state_root, "c1").destroy()
    assert not os.path.exists(os.path.join(state_root, "c1"))
    assert joined(dirs) == {}


@needs_root
@pytest.mark.integration
@V1_LIMITS
def test_runu_cri_sandbox_placement_limits_ps_delete(rt, tmp_path, cg):
    inner = cg.top() + "/kubepods/pod1/sb"
    b = sandbox(tmp_path, cgroups_path=inner, resources=RES)
    pid = rt.create("sb", b)
    dirs = cg.dirs(inner)
    assert_placed(pid, inner, dirs)
    assert_limits(dirs)
    rt.ok("start", "sb")
    wait_for(lambda: read(f"/proc/{pid}/comm") == "busybox", what="sleep to run")
    assert_placed(pid, inner, dirs)
    assert rt.ok("ps", "--format", "json", "sb").json() == [pid]
    assert rt.state("sb")["status"] == "running"
    rt.ok("kill", "--all", "sb", "KILL")
    wait_exit(pid)
    assert rt.state("sb")["status"] == "stopped"
    rt.ok("delete", "sb")
    assert joined(dirs) == {}
    assert rt.ids() == []


@needs_root
@pytest.mark.integration
@V1_LIMITS
def test_runu_systemd_cgroup(rt, tmp_path, cg):
    sl = cg.slice()
    b = sandbox(tmp_path, cgroups_path=f"{sl}:cri-runu:sb", resources=RES)
    flags = rt.global_flags() + ["--systemd-cgroup"]
    rt.ok("create", "--bundle", b, "--pid-file", f"{b}/init.pid", "sb", flags=flags)
    pid = int(read(f"{b}/init.pid"))
    parent = sl.split("-")[0]
    inner = f"/{parent}.slice/{sl}/cri-runu-sb.scope"
    dirs = cg.dirs(inner)
    assert_placed(pid, inner, dirs)
    assert proc_cgroup(pid)["name=systemd"] == inner
    assert_limits(dirs)
    rt.ok("delete", "--force", "sb")
    assert not alive(pid)
    assert joined(dirs) == {}
    assert os.path.isdir(os.path.dirname(dirs["name=systemd"]))  # the slices stay, as systemd's would
    # the systemd form without the flag, and a cgroupfs path with it, are clear errors that leave nothing
    bad = rt("create", "--bundle", b, "x1")
    assert bad.rc == 1 and "--systemd-cgroup" in bad.err
    b2 = sandbox(tmp_path, "b2", cgroups_path=cg.top())
    bad = rt("create", "--bundle", b2, "x2", flags=flags)
    assert bad.rc == 1 and "slice:prefix:name" in bad.err
    assert rt.ids() == [] and rt.new_processes() == []


@needs_root
@pytest.mark.integration
def test_runu_default_and_relative_paths(rt, tmp_path, cg):
    cid = f"mtcg-{cg.token}"
    default = f"/runu/{cgroups.default_name(rt.root, cid)}"  # the id and a hash of the root
    assert default.startswith(f"/runu/{cid}-")
    cg.tops.append(default)
    cg.prune.append("/runu")
    pid = rt.create(cid, sandbox(tmp_path, "b1"))
    dirs = cg.dirs(default)
    assert_placed(pid, default, dirs)

    rel = cg.top(relative=True) + "/c"
    pid2 = rt.create("rel", sandbox(tmp_path, "b2", cgroups_path=rel))
    rdirs = cg.dirs(rel)  # below our own cgroup, which runu shares: e.g. memory's is not the root here
    assert_placed(pid2, rel, rdirs)
    assert rt.ok("ps", "--format", "json", "rel").json() == [pid2]

    rt.ok("delete", "--force", cid)
    rt.ok("delete", "--force", "rel")
    assert joined(dirs) == {} and joined(rdirs) == {}


@needs_root
@pytest.mark.integration
def test_runu_kill_all_and_delete_reach_processes_left_in_the_cgroup(rt, tmp_path, cg):
    inner = cg.top() + "/c"
    pid = rt.create("c1", sandbox(tmp_path, cgroups_path=inner))
    rt.ok("start", "c1")
    dirs = cg.dirs(inner)
    strays = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        for s in strays:  # not descendants of the init: only the cgroup knows they belong to it
            for path in set(dirs.values()):
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(s.pid))
        assert rt.ok("ps", "--format", "json", "c1").json() == [pid] + sorted(s.pid for s in strays)
        rt.ok("kill", "c1", "KILL")  # the init only
        wait_exit(pid)
        assert all(s.poll() is None for s in strays)
        rt.ok("kill", "--all", "c1", "TERM")  # a stopped container: what is left in its cgroup
        assert strays[0].wait(5) == -signal.SIGTERM
        assert strays[1].wait(5) == -signal.SIGTERM
    finally:
        for s in strays:
            s.kill()
            s.wait()
    # and delete of a stopped container kills what is left before removing the cgroup (as runc does)
    late = subprocess.Popen(["sleep", "30"])
    try:
        with open(os.path.join(dirs["memory"], "cgroup.procs"), "w") as f:
            f.write(str(late.pid))
        rt.ok("delete", "c1")
        assert late.wait(5) == -signal.SIGKILL
    finally:
        late.kill()
        late.wait()
    assert joined(dirs) == {}


@needs_root
@pytest.mark.integration
def test_runu_refuses_a_cgroup_that_holds_processes(rt, tmp_path, cg):
    inner = cg.top() + "/taken"
    dirs = cg.dirs(inner)
    os.makedirs(dirs["pids"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        with open(os.path.join(dirs["pids"], "cgroup.procs"), "w") as f:
            f.write(str(other.pid))
        r = rt("create", "--bundle", sandbox(tmp_path, cgroups_path=inner), "c1")
        assert r.rc == 1 and "holds processes" in r.err and str(other.pid) in r.err, r
        assert rt.ids() == [] and rt.new_processes() == [other.pid]
        assert joined(dirs) == {"pids": dirs["pids"]}  # ours removed, the other one's untouched
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@needs_root
@pytest.mark.integration
@V1_LIMITS
def test_runu_a_cpuset_the_kernel_refuses_only_warns(rt, tmp_path, cg):
    inner = cg.top() + "/c"
    res = {"memory": {"limit": 100 << 20}, "cpu": {"cpus": str((os.cpu_count() or 1) + 7)}}
    b = sandbox(tmp_path, cgroups_path=inner, resources=res)
    r = rt.ok("create", "--bundle", b, "--pid-file", f"{b}/init.pid", "c1")
    assert "cgroup: cpuset limit: cannot set cpuset.cpus" in r.err, r
    pid = int(read(f"{b}/init.pid"))
    dirs = cg.dirs(inner)
    assert_placed(pid, inner, dirs)
    parent_cpus = read(os.path.join(os.path.dirname(dirs["cpuset"]), "cpuset.cpus"))
    assert read(dirs["cpuset"] + "/cpuset.cpus") == parent_cpus  # inherited, so the task could join
    assert read(dirs["memory"] + "/memory.limit_in_bytes") == str(100 << 20)
    rt.ok("delete", "--force", "c1")
    assert joined(dirs) == {}


@needs_root
@pytest.mark.integration
@V1_LIMITS
def test_runu_a_read_only_controller_only_warns(rt, tmp_path, cg):
    """The pids hierarchy made read-only (a bind mount in a private mount namespace around runu create)."""
    pids_mnt = Host.current().hierarchies()["pids"].mountpoint
    inner = cg.top() + "/c"
    b = sandbox(tmp_path, cgroups_path=inner, resources=RES)
    script = (f"mount --bind {pids_mnt} {pids_mnt} && mount -o remount,bind,ro {pids_mnt} && "
              f'exec "$@"')
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    r = rt("create", "--bundle", b, "--pid-file", f"{b}/init.pid", "c1", wrap=wrap)
    assert r.rc == 0, r
    assert "pids" in r.err and "Read-only file system" in r.err, r
    pid = int(read(f"{b}/init.pid"))
    dirs = cg.dirs(inner)
    assert not os.path.exists(dirs["pids"])
    assert proc_cgroup(pid)["pids"] == "/"
    rest = {k: v for k, v in dirs.items() if k != "pids"}
    assert_placed(pid, inner, rest)
    assert read(dirs["memory"] + "/memory.limit_in_bytes") == str(200 << 20)
    with open(os.path.join(rt.root, "c1", "state.json")) as f:
        assert json.load(f)["cgroup_paths"] == rest
    rt.ok("start", "c1")
    assert rt.ok("ps", "--format", "json", "c1").json() == [pid]
    rt.ok("delete", "--force", "c1")  # from the host's mount namespace; the private one goes with the init
    assert joined(dirs) == {}
    assert rt.ids() == []


@needs_root
@pytest.mark.integration
def test_runu_run_in_the_foreground(tmp_path, cg):
    """`runu run` (foreground) with a cgroupsPath: the process runs confined and the cgroup is gone after."""
    inner = cg.top() + "/run"
    b = sandbox(tmp_path, cgroups_path=inner, resources={"pids": {"limit": 5}},
                args=["/bin/busybox", "sh", "-c", "cat /proc/self/cgroup"])
    root = str(tmp_path / "root")
    r = subprocess.run([RUNU_LIBRARY, "--root", root, "run", "--bundle", b, "r1"], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r
    assert f":pids:{inner}" in r.stdout and f"0::{inner}" in r.stdout
    assert joined(cg.dirs(inner)) == {}


# ---- the warm-up before create's first cgroup move ---------------------------------------------------

WARM_UP = """
import os, sys, threading
sys.path.insert(0, {src!r})
from mocktainer import cgroups
before = open("/proc/self/cgroup").read()
pid = cgroups.warm_up()
assert pid > 0, pid
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert open("/proc/self/cgroup").read() == before
assert any(os.path.exists(p) for p in cgroups._own_procs_files()), cgroups._own_procs_files()
t = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
t.start()
assert cgroups.warm_up() == 0  # never a fork from a threaded caller
print("ok")
"""


def test_warm_up_forks_a_helper_that_exits_at_once_and_only_when_single_threaded():
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", WARM_UP.format(src=src)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout == "ok\n", r
