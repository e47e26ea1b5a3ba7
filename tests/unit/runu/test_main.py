"""runu.main: flag parsing (runc's spellings, flags after the id, errors)."""

import pytest

from runu.main import CREATE_FLAGS, GLOBAL_FLAGS, UsageError, parse_flags


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
