"""Property-based tests (hypothesis) of the pure parsers: specconv, the bootstrap message codec,
signal names and container ids. Whatever they are fed, they answer or raise their own error type."""

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocktainer import ConfigError, message
from mocktainer.configs import Config
from mocktainer.error import InvalidIDError
from mocktainer.factory import MAX_ID_LEN, validate_id
from mocktainer.specconv import create_config
from runu.signals import _NAMES, MAX_SIGNAL, SignalError, parse_signal

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, small.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
namespace_types = st.sampled_from(["network", "pid", "mount", "ipc", "uts", "user", "cgroup", "time", "bogus"])
hook = st.fixed_dictionaries({"path": st.one_of(st.just("/bin/true"), json_values)},
                             optional={"args": json_values, "env": json_values, "timeout": json_values})
valid_ish_spec = st.fixed_dictionaries(
    {
        "ociVersion": st.one_of(st.sampled_from(["1.0.2", "1.1.0", "1.2.0-rc.1", "2.0.0", "1.0", ""]), json_values),
        "root": st.one_of(st.fixed_dictionaries({"path": st.one_of(st.sampled_from(["rootfs", "/r", ""]),
                                                                   json_values)}), json_values),
    },
    optional={
        "process": st.one_of(st.fixed_dictionaries({}, optional={
            "args": json_values, "env": json_values, "apparmorProfile": json_values,
            "selinuxLabel": json_values}), json_values),
        "annotations": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
                                 json_values),
        "hooks": st.one_of(st.fixed_dictionaries({}, optional={
            "prestart": st.lists(hook, max_size=2), "createRuntime": st.lists(hook, max_size=2),
            "poststop": st.one_of(st.lists(hook, max_size=2), json_values)}), json_values),
        "linux": st.one_of(st.fixed_dictionaries({}, optional={
            "namespaces": st.one_of(st.lists(st.one_of(st.fixed_dictionaries(
                {"type": namespace_types}, optional={"path": st.one_of(st.sampled_from(["/run/netns/x", "rel"]),
                                                                       json_values)}), json_values), max_size=3),
                json_values),
            "cgroupsPath": st.one_of(st.sampled_from(["", "/a/b", "s.slice:p:n"]), json_values),
            "resources": st.one_of(st.fixed_dictionaries({}, optional={
                "memory": st.one_of(st.fixed_dictionaries({}, optional={"limit": json_values}), json_values),
                "cpu": st.one_of(st.fixed_dictionaries({}, optional={"shares": json_values, "quota": json_values,
                                                                     "period": json_values}), json_values),
                "pids": st.one_of(st.fixed_dictionaries({}, optional={"limit": json_values}), json_values),
            }), json_values),
        }), json_values),
    },
)


@FAST
@given(spec=st.one_of(valid_ish_spec, json_values))
def test_specconv_raises_only_config_error_and_round_trips(spec):
    try:
        config = create_config(spec, "/bundle")
    except ConfigError:
        return
    assert os.path.isabs(config.rootfs)
    text = json.dumps(config.to_dict())
    again = Config.from_dict(json.loads(text))
    assert again == config
    assert json.dumps(again.to_dict()) == text


ns_path = st.text(st.characters(blacklist_characters=",\0", blacklist_categories=("Cs",)), min_size=1, max_size=60)


@FAST
@given(flags=st.integers(0, 2**32 - 1), path=st.one_of(st.none(), ns_path))
def test_bootstrap_message_round_trips(flags, path):
    paths = {} if path is None else {"net": path}
    data = message.bootstrap_data(flags, paths)
    assert message.parse_bootstrap(data) == (flags, paths)


@FAST
@given(data=st.binary(max_size=200))
def test_bootstrap_parser_raises_only_message_error(data):
    try:
        message.parse_bootstrap(data)
    except message.MessageError:
        pass


@FAST
@given(flags=st.integers(0, 2**32 - 1), path=ns_path, cut=st.integers(0, 400), byte=st.integers(0, 255))
def test_bootstrap_parser_on_damaged_messages(flags, path, cut, byte):
    data = bytearray(message.bootstrap_data(flags, {"net": path}))
    pos = cut % len(data)
    for damaged in (bytes(data[:pos]), bytes(data[:pos] + bytes([byte]) + data[pos + 1:])):
        try:
            message.parse_bootstrap(damaged)
        except message.MessageError:
            pass


@FAST
@given(raw=st.one_of(st.text(max_size=12), st.from_regex(r"(?i)(sig)?(rtmin\+|rtmax-)?[0-9]{1,3}", fullmatch=True)))
def test_parse_signal_answers_in_range_or_raises_signal_error(raw):
    try:
        n = parse_signal(raw)
    except SignalError:
        return
    assert isinstance(n, int) and 1 <= n <= MAX_SIGNAL


@FAST
@given(name=st.sampled_from(sorted(_NAMES)), sig=st.booleans(), lower=st.booleans())
def test_signal_names_round_trip(name, sig, lower):
    raw = ("SIG" + name) if sig else name
    assert parse_signal(raw.lower() if lower else raw) == _NAMES[name]
    assert parse_signal(str(_NAMES[name])) == _NAMES[name]


@FAST
@given(offset=st.integers(0, 40))
def test_realtime_offsets(offset):
    for raw, n in ((f"RTMIN+{offset}", 34 + offset), (f"SIGRTMAX-{offset}", 64 - offset)):
        if 34 <= n <= 64:
            assert parse_signal(raw) == n
        else:
            try:
                parse_signal(raw)
            except SignalError:
                continue
            raise AssertionError(f"{raw} accepted")


ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-."


@FAST
@given(cid=st.text(ID_ALPHABET, min_size=1, max_size=MAX_ID_LEN))
def test_valid_ids_accepted(cid):
    if cid in (".", ".."):
        return
    validate_id(cid)


@FAST
@given(cid=st.one_of(st.text(max_size=300), st.text(ID_ALPHABET + "/\\\0 ", max_size=300)))
def test_id_validation_is_exact(cid):
    allowed = bool(cid) and cid not in (".", "..") and len(cid) <= MAX_ID_LEN and set(cid) <= set(ID_ALPHABET)
    try:
        validate_id(cid)
    except InvalidIDError:
        assert not allowed
        return
    assert allowed
    assert "/" not in cid and "\0" not in cid and os.path.basename(cid) == cid


def test_id_length_boundary():
    validate_id("a" * MAX_ID_LEN)
    for bad in ("a" * (MAX_ID_LEN + 1), "", ".", "..", "a/b", "../x", "a\0b"):
        try:
            validate_id(bad)
        except InvalidIDError:
            continue
        raise AssertionError(f"{bad!r} accepted")
