"""The bootstrap message: the first thing the parent sends the container init.

It is a netlink-shaped message so it stays byte-compatible with libcontainer's:
a 16-byte `nlmsghdr` (length, type INIT_MSG, flags NLM_F_REQUEST, seq 0, pid 0)
followed by attributes, each a 4-byte header (length, type) and a payload padded
to 4 bytes. All integers are native-endian, as netlink is.
"""

import struct

from .system import CLONE_NEWNET

INIT_MSG = 62000
CLONE_FLAGS_ATTR = 27281
NS_PATHS_ATTR = 27282

NLM_F_REQUEST = 0x1
_NLMSGHDR = struct.Struct("=IHHII")
_NLA_HDR = struct.Struct("=HH")
_NLA_ALIGNTO = 4
_MAX_ATTR_LEN = 0xFFFF

# Namespace kinds the bootstrap message can name, keyed by the prefix used in NS_PATHS_ATTR.
NS_CLONE_FLAGS = {"net": CLONE_NEWNET}


class MessageError(ValueError):
    """The bootstrap message could not be built or parsed."""


def _align(n: int) -> int:
    return (n + _NLA_ALIGNTO - 1) & ~(_NLA_ALIGNTO - 1)


class Int32msg:
    """A netlink attribute carrying one native-endian 32-bit integer."""

    __slots__ = ("type", "value")

    def __init__(self, type: int, value: int) -> None:
        self.type = type
        self.value = value

    def __len__(self) -> int:
        return _NLA_HDR.size + 4

    def serialize(self) -> bytes:
        return _NLA_HDR.pack(len(self), self.type) + struct.pack("=I", self.value & 0xFFFFFFFF)


class Bytemsg:
    """A netlink attribute carrying a byte string, sent NUL-terminated and padded to 4 bytes."""

    __slots__ = ("type", "value")

    def __init__(self, type: int, value: bytes) -> None:
        self.type = type
        self.value = value

    def __len__(self) -> int:
        return _NLA_HDR.size + len(self.value) + 1

    def serialize(self) -> bytes:
        n = len(self)
        if n > _MAX_ATTR_LEN:
            raise MessageError(
                f"attribute {self.type} is {n} bytes long; netlink attributes hold at most {_MAX_ATTR_LEN}")
        body = _NLA_HDR.pack(n, self.type) + self.value + b"\0"
        return body + b"\0" * (_align(n) - n)


def serialize(msg_type: int, attrs: list) -> bytes:
    payload = b"".join(a.serialize() for a in attrs)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, NLM_F_REQUEST, 0, 0) + payload


def parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    """Split a message into its type and {attribute type: raw payload}."""
    if len(data) < _NLMSGHDR.size:
        raise MessageError("bootstrap message shorter than its header")
    length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data)
    if length != len(data):
        raise MessageError(f"bootstrap message says {length} bytes but {len(data)} arrived")
    attrs: dict[int, bytes] = {}
    off = _NLMSGHDR.size
    while off < length:
        if off + _NLA_HDR.size > length:
            raise MessageError("truncated attribute header")
        alen, atype = _NLA_HDR.unpack_from(data, off)
        if alen < _NLA_HDR.size or off + alen > length:
            raise MessageError(f"attribute {atype} has a bad length {alen}")
        attrs[atype] = bytes(data[off + _NLA_HDR.size : off + alen])
        off += _align(alen)
    return msg_type, attrs


def encode_ns_paths(paths: dict[str, str]) -> bytes:
    """`{"net": "/run/netns/x"}` -> b"net:/run/netns/x" (commas separate entries)."""
    parts = []
    for kind, path in paths.items():
        if "," in path:
            raise MessageError(f"namespace path {path!r} contains a comma, which the bootstrap message cannot carry")
        parts.append(f"{kind}:{path}")
    return ",".join(parts).encode()


def bootstrap_data(clone_flags: int, ns_paths: dict[str, str]) -> bytes:
    """The whole INIT_MSG the parent writes to the init pipe."""
    attrs: list = [Int32msg(CLONE_FLAGS_ATTR, clone_flags)]
    if ns_paths:
        attrs.append(Bytemsg(NS_PATHS_ATTR, encode_ns_paths(ns_paths)))
    return serialize(INIT_MSG, attrs)


def parse_bootstrap(data: bytes) -> tuple[int, dict[str, str]]:
    """The init's side of `bootstrap_data`: returns (clone flags, {kind: path})."""
    msg_type, attrs = parse(data)
    if msg_type != INIT_MSG:
        raise MessageError(f"unexpected message type {msg_type}, wanted {INIT_MSG}")
    flags = 0
    if CLONE_FLAGS_ATTR in attrs:
        raw = attrs[CLONE_FLAGS_ATTR]
        if len(raw) != 4:
            raise MessageError("clone flags attribute is not 4 bytes")
        flags = struct.unpack("=I", raw)[0]
    paths: dict[str, str] = {}
    raw_paths = attrs.get(NS_PATHS_ATTR, b"").rstrip(b"\0")
    if raw_paths:
        try:
            text = raw_paths.decode()
        except UnicodeDecodeError as e:
            raise MessageError(f"namespace paths in the bootstrap message are not UTF-8: {e}") from None
        for entry in text.split(","):
            kind, sep, path = entry.partition(":")
            if not sep or not path:
                raise MessageError(f"malformed namespace path entry {entry!r}")
            if kind not in NS_CLONE_FLAGS:
                raise MessageError(f"unsupported namespace kind {kind!r} in bootstrap message")
            paths[kind] = path
    return flags, paths
