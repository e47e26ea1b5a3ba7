"""runu.signals: signal names and numbers as runc accepts them."""

import pytest

from runu.signals import SignalError, parse_signal


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
