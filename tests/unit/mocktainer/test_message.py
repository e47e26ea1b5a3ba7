"""mocktainer.message: the bootstrap message the init reads (netlink-style, pinned bytes)."""

import struct
import sys

import pytest

import mocktainer
from mocktainer import message


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
