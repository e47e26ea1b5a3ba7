"""mocktainer.configs and mocktainer.state: libmocktainer's field names, accessors, the state file's shape."""

import json

import mocktainer
from mocktainer import configs, fastjson
from mocktainer.state import State, Status


def _full_config():
    return configs.Config(
        parent_death_signal=9,
        rootfs="/r",
        namespaces=configs.Namespaces([configs.Namespace(type=configs.NamespaceType.NEWNET, path="/p")]),
        networks=[configs.Network(type="loopback")],
        apparmor_profile="prof",
        process_label="lab",
        hooks=configs.Hooks({"prestart": [configs.CommandHook(path="/bin/true", args=["true"], timeout=3)]}),
        version="1.0.2",
        labels=["a=b", "bundle=/b"],
    )


def test_config_round_trips_with_libmocktainer_field_names():
    c = _full_config()
    d = json.loads(fastjson.dumps(c.to_dict()))
    for key in ("parent_death_signal", "rootfs", "namespaces", "networks", "apparmor_profile",
                "process_label", "hooks", "version", "labels"):
        assert key in d
    assert d["namespaces"] == [{"type": "NEWNET", "path": "/p"}]
    assert d["networks"] == [{"type": "loopback"}]
    assert d["hooks"]["prestart"][0] == {"path": "/bin/true", "args": ["true"], "env": [], "dir": "", "timeout": 3}
    assert set(d["hooks"]) == set(configs.HOOK_NAMES)
    assert configs.Config.from_dict(d) == c


def test_config_accessors():
    c = _full_config()
    assert c.label("bundle") == "/b" and c.label("nope") is None
    assert c.annotations() == {"a": "b"}
    assert c.namespaces.contains(configs.NamespaceType.NEWNET)
    assert c.namespaces.path_of(configs.NamespaceType.NEWNET) == "/p"
    assert c.namespaces.clone_flags() == 0  # joined, not new
    assert configs.Namespaces([configs.Namespace(type="NEWNET")]).clone_flags() == 0x40000000


def test_state_shape():
    st = State(id="x", init_process_pid=5, init_process_start=7, created="2026-01-01T00:00:00.000000000Z",
               config=_full_config(), namespace_paths={"NEWNET": "/proc/5/ns/net"})
    d = st.to_dict()
    assert set(d) == {"id", "init_process_pid", "init_process_start", "created", "config", "namespace_paths",
                      "cgroup_paths"}
    assert State.from_dict(json.loads(fastjson.dumps(d))) == st


def test_status_prints_as_name():
    assert str(Status.CREATED) == "created" and Status.RUNNING == "running" and f"{Status.STOPPED}" == "stopped"
    assert mocktainer.Status.CREATED is Status.CREATED
