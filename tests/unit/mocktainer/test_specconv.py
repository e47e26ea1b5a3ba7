"""mocktainer.specconv: an OCI spec to a Config."""

import pytest

import mocktainer
from mocktainer import configs, specconv


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
