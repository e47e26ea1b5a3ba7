"""Signal names and numbers as `kill` accepts them: 9, KILL, SIGKILL, sigkill, RTMIN+3.

A table rather than the `signal` module: that import costs ~5 ms (it loads enum)
on a command containerd calls for every container it stops.
"""

_NAMES = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16,
    "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24,
    "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
    "RTMIN": 34, "RTMAX": 64,
}
MAX_SIGNAL = 64


class SignalError(ValueError):
    pass


def parse_signal(raw: str) -> int:
    if raw.isascii() and raw.isdigit():  # str.isdigit alone also takes "²", which int() refuses
        n = int(raw)
        if 1 <= n <= MAX_SIGNAL:
            return n
        raise SignalError(f"signal number {raw} is out of range (1-{MAX_SIGNAL})")
    name = raw.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in _NAMES:
        return _NAMES[name]
    # Real-time signals relative to the ends of their range: RTMIN+3, RTMAX-1.
    for base, sign in (("RTMIN+", 1), ("RTMAX-", -1)):
        offset = name[len(base):]
        if name.startswith(base) and offset.isascii() and offset.isdigit():
            n = _NAMES[base[:-1]] + sign * int(offset)
            if _NAMES["RTMIN"] <= n <= _NAMES["RTMAX"]:
                return n
    raise SignalError(f"unknown signal {raw!r}")
