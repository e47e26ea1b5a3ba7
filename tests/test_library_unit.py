"""Fast tests of the library's pure logic: ids, the bootstrap message, configs, specconv, JSON."""

import json
import struct
import sys

import pytest

import mocktainer
from mocktainer import configs, fastjson, message, specconv
from mocktainer.factory import validate_id
from mocktainer.state import State, Status


# ---- ids -------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", ["a", "A-Z_a.z+0-9", "x" * 255, "..a", "a..", "-"])
def test_valid_ids(cid):
    validate_id(cid)


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "/a", "a\\b", "a b", "a\0b", "é", "a:b", "x" * 256, "x" * 1024])
def test_invalid_ids(cid):
    with pytest.raises(mocktainer.InvalidIDError) as e:
        validate_id(cid)
    assert "container id" in str(e.value)


def test_errors_share_one_base():
    for cls in (mocktainer.ExistsError, mocktainer.InvalidIDError, mocktainer.NotExistError,
                mocktainer.RunningError, mocktainer.NotRunningError):
        assert issubclass(cls, mocktainer.Error)


# ---- bootstrap message -----------------------------------------------------------------

def test_constants():
    assert (mocktainer.INIT_MSG, mocktainer.CLONE_FLAGS_ATTR, mocktainer.NS_PATHS_ATTR) == (62000, 27281, 27282)


def test_bootstrap_bytes_are_pinned():
    data = message.bootstrap_data(0x40000000, {"net": "/run/netns/a"})
    e = "<" if sys.byteorder == "little" else ">"
    path = b"net:/run/netns/a"  # 16 bytes + NUL = 17 -> attr len 21, padded to 24
    expected = (
        struct.pack(e + "IHHII", 16 + 8 + 24, 62000, 1, 0, 0)
        + struct.pack(e + "HHI", 8, 27281, 0x40000000)
        + struct.pack(e + "HH", 21, 27282) + path + b"\0" + b"\0\0\0"
    )
    assert data == expected
    assert message.parse_bootstrap(data) == (0x40000000, {"net": "/run/netns/a"})


def test_int32msg_and_bytemsg_serialize():
    assert len(message.Int32msg(1, 5)) == 8
    assert message.Int32msg(1, 5).serialize() == struct.pack("=HHI", 8, 1, 5)
    b = message.Bytemsg(2, b"abc")
    assert len(b) == 8 and b.serialize() == struct.pack("=HH", 8, 2) + b"abc\0"
    b = message.Bytemsg(2, b"abcd")
    assert len(b) == 9 and b.serialize() == struct.pack("=HH", 9, 2) + b"abcd\0" + b"\0\0\0"


def test_bytemsg_too_long_is_a_clear_error():
    with pytest.raises(message.MessageError, match="at most 65535"):
        message.Bytemsg(2, b"x" * 65535).serialize()
    message.Bytemsg(2, b"x" * (65535 - 5)).serialize()  # exactly at the limit


def test_namespace_path_with_comma_is_refused():
    with pytest.raises(message.MessageError, match="comma"):
        message.bootstrap_data(0, {"net": "/run/netns/a,b"})


@pytest.mark.parametrize("data", [b"", b"\0" * 10, struct.pack("=IHHII", 99, 62000, 1, 0, 0)])
def test_bootstrap_parser_rejects_garbage(data):
    with pytest.raises(message.MessageError):
        message.parse_bootstrap(data)


def test_bootstrap_without_paths():
    assert message.parse_bootstrap(message.bootstrap_data(0, {})) == (0, {})


# ---- configs ---------------------------------------------------------------------------

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


# ---- specconv --------------------------------------------------------------------------

def _spec(**kw):
    s = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["x"]}}
    s.update(kw)
    return s


def test_specconv_basics():
    cfg = specconv.create_config(_spec(annotations={"k": "v", "k2": "a=b"}), bundle="/abs/bundle")
    assert cfg.rootfs == "/abs/bundle/rootfs"
    assert cfg.labels == ["k=v", "k2=a=b", "bundle=/abs/bundle"]
    assert cfg.version == "1.0.2"
    assert not cfg.namespaces and not cfg.networks


def test_specconv_absolute_rootfs_kept():
    assert specconv.create_config(_spec(root={"path": "/elsewhere/r"}), "/b").rootfs == "/elsewhere/r"


def test_specconv_new_netns_gets_loopback():
    cfg = specconv.create_config(_spec(linux={"namespaces": [{"type": "network"}]}), "/b")
    assert cfg.namespaces == [configs.Namespace(type="NEWNET", path="")]
    assert [n.type for n in cfg.networks] == ["loopback"]


def test_specconv_netns_by_path_has_no_loopback_network():
    cfg = specconv.create_config(_spec(linux={"namespaces": [{"type": "network", "path": "/run/netns/x"}]}), "/b")
    assert cfg.namespaces.path_of("NEWNET") == "/run/netns/x"
    assert cfg.networks == []


def test_specconv_namespace_errors():
    with pytest.raises(mocktainer.ConfigError, match="duplicated"):
        specconv.create_config(_spec(linux={"namespaces": [{"type": "network"}, {"type": "network"}]}), "/b")
    with pytest.raises(mocktainer.ConfigError, match="not supported"):
        specconv.create_config(_spec(linux={"namespaces": [{"type": "pid"}]}), "/b")
    assert specconv.known_namespaces() == ["network"]


def test_specconv_hooks_with_timeouts():
    hooks = {"prestart": [{"path": "/bin/a", "args": ["a", "1"], "env": ["E=1"], "timeout": 5}],
             "poststop": [{"path": "/bin/b"}]}
    cfg = specconv.create_config(_spec(hooks=hooks), "/b")
    assert cfg.hooks["prestart"][0].timeout == 5 and cfg.hooks["prestart"][0].env == ["E=1"]
    assert cfg.hooks["poststop"][0].timeout is None
    with pytest.raises(mocktainer.ConfigError, match="timeout"):
        specconv.create_config(_spec(hooks={"prestart": [{"path": "/x", "timeout": 0}]}), "/b")
    with pytest.raises(mocktainer.ConfigError, match="no path"):
        specconv.create_config(_spec(hooks={"prestart": [{"args": []}]}), "/b")


def test_specconv_missing_root():
    s = _spec()
    del s["root"]
    with pytest.raises(mocktainer.ConfigError, match="root"):
        specconv.create_config(s, "/b")


@pytest.mark.parametrize("v", ["", "1", "1.0", "v1.0.0", "01.0.0", "2.0.0", None, 1])
def test_specconv_invalid_oci_version(v):
    with pytest.raises(mocktainer.ConfigError, match="ociVersion"):
        specconv.create_config(_spec(ociVersion=v), "/b")


@pytest.mark.parametrize("v", ["1.0.0", "1.0.2", "1.1.0", "1.0.2-dev", "1.2.0+build.1"])
def test_specconv_valid_oci_versions(v):
    specconv.create_config(_spec(ociVersion=v), "/b")


# ---- fastjson --------------------------------------------------------------------------

@pytest.mark.parametrize("obj", [{}, [], {"a": [1, 2.5, None, True, False, "é\n\"\\"]}, "x", 0, -1.5e300])
def test_fastjson_matches_json(obj):
    assert json.loads(fastjson.dumps(obj)) == obj
    assert fastjson.loads(json.dumps(obj, indent=2)) == obj


@pytest.mark.parametrize("text", ["", "{", "{\"a\":1} x", "[1,]", "nul", "{'a': 1}", b"\xff"])
def test_fastjson_errors(text):
    with pytest.raises(ValueError):
        fastjson.loads(text)


def test_fastjson_drives_make_encoder_as_json_does(monkeypatch):
    """fastjson calls CPython's private `_json.make_encoder` positionally. Record the arguments this
    interpreter's own json.encoder passes to it and check, by role, that fastjson passes its values in the
    same order: a Python where the signature changed fails here, by name, instead of encoding wrongly."""
    import json.encoder as je

    seen = []

    def recorder(*args):
        seen.append(args)
        return lambda obj, level: iter(())

    monkeypatch.setattr(je, "c_make_encoder", recorder)
    marker = object()

    def default(o):
        return marker

    je.JSONEncoder(separators=(",", ":"), default=default, ensure_ascii=True, sort_keys=False, skipkeys=False,
                   allow_nan=True).iterencode({"k": 1}, _one_shot=True)
    if not seen:  # this json.encoder no longer uses the C encoder: nothing to mirror
        pytest.fail("json.encoder did not call c_make_encoder; fastjson's use of _json.make_encoder is unchecked")
    args = seen[0]
    assert len(args) == len(fastjson.ENCODER_ARGS), (args, fastjson.ENCODER_ARGS)
    roles = dict(zip(fastjson.ENCODER_ARGS, args, strict=True))
    assert isinstance(roles["markers"], dict)  # json passes its circular-reference markers
    assert roles["default"] == default
    assert roles["encoder"] is json.encoder.encode_basestring_ascii or roles["encoder"].__name__.startswith(
        "encode_basestring")
    assert roles["indent"] is None
    assert (roles["key_separator"], roles["item_separator"]) == (":", ",")
    assert (roles["sort_keys"], roles["skipkeys"], roles["allow_nan"]) == (False, False, True)
    assert isinstance(fastjson._encode, _json_encoder_type()), "fastjson fell back to the slow encoder here"


def _json_encoder_type():
    import _json

    return type(_json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True))
