"""Fast tests of runu's pure logic: flag parsing, signal names, output formatting."""

import json

import pytest

from runu.main import CREATE_FLAGS, GLOBAL_FLAGS, UsageError, parse_flags
from runu.output import pretty_json, table
from runu.signals import SignalError, parse_signal


def test_global_flags_both_spellings_and_stop_at_command():
    argv = ["--root", "/r", "--log=/l", "-log-format", "json", "--debug", "create", "--bundle", "b", "x"]
    flags, rest = parse_flags(argv, GLOBAL_FLAGS, True)
    assert flags == {"root": "/r", "log": "/l", "log-format": "json", "debug": True}
    assert rest == ["create", "--bundle", "b", "x"]


def test_create_flags():
    flags, rest = parse_flags(["-b", "/b", "--pid-file=/p", "--preserve-fds", "2", "--no-pivot", "id1"],
                              CREATE_FLAGS, False)
    assert flags == {"bundle": "/b", "pid-file": "/p", "preserve-fds": 2, "no-pivot": True}
    assert rest == ["id1"]


def test_flags_after_the_id_and_double_dash():
    flags, rest = parse_flags(["id1", "--force"], {"force": ("bool", "f")}, False)
    assert flags == {"force": True} and rest == ["id1"]
    flags, rest = parse_flags(["--", "-x"], {"force": ("bool", "f")}, False)
    assert rest == ["-x"]


@pytest.mark.parametrize("argv,match", [
    (["--nope"], "not defined"),
    (["--bundle"], "needs an argument"),
    (["--preserve-fds", "x"], "non-negative number"),
    (["--no-pivot=maybe"], "invalid boolean"),
])
def test_flag_errors(argv, match):
    with pytest.raises(UsageError, match=match):
        parse_flags(argv, CREATE_FLAGS, False)


@pytest.mark.parametrize("raw,num", [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15), ("term", 15),
                                     ("USR1", 10), ("SIGRTMIN", 34), ("RTMIN+3", 37), ("SIGRTMAX-1", 63),
                                     ("64", 64), ("WINCH", 28)])
def test_signals(raw, num):
    assert parse_signal(raw) == num


@pytest.mark.parametrize("raw", ["0", "65", "NOPE", "SIG", "", "KILL+1", "RTMIN+40", "-9"])
def test_bad_signals(raw):
    with pytest.raises(SignalError):
        parse_signal(raw)


def test_signal_table_matches_the_platform():
    import signal

    for name in ("HUP", "INT", "QUIT", "KILL", "USR1", "USR2", "TERM", "CHLD", "CONT", "STOP", "WINCH", "SYS"):
        assert parse_signal(name) == getattr(signal, "SIG" + name)


@pytest.mark.parametrize("obj", [{}, [], {"a": 1, "b": [1, {"c": None}], "d": {}}, [True, "x\"y", 1.5]])
def test_pretty_json_is_json(obj):
    text = pretty_json(obj)
    assert json.loads(text) == obj


def test_pretty_json_indents_like_runc():
    assert pretty_json({"a": [1]}) == '{\n  "a": [\n    1\n  ]\n}'


def test_table_aligns_columns():
    assert table(["ID", "PID"], [["a", "1"], ["long-id", "22"]]).splitlines() == [
        "ID        PID", "a         1", "long-id   22"]
