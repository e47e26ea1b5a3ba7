"""JSON on the C accelerator alone.

`import json` costs ~8 ms here because its pure-Python halves pull in `re`;
every runu call and every container init reads or writes JSON, so this module
drives `_json`'s C scanner and encoder directly. Output is compact and ASCII,
like `json.dumps(obj, separators=(",", ":"))`.
"""

import _json
from _collections_abc import Callable, Iterable  # already loaded at start-up (collections.abc is not)

__all__ = ["dumps", "loads", "JSONDecodeError"]


class JSONDecodeError(ValueError):
    """The text is not a single JSON value."""


def _constant(name: str) -> float:
    return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


class _Context:
    # The attributes _json.make_scanner reads from a json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo: dict = {}


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed like json.JSONDecoder


def _default(obj: object) -> object:
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# _json.make_encoder is private and positional. Its arguments, in the order json.encoder passes them
# (tests/test_library_unit.py records what this interpreter's json.encoder really passes and fails
# by name if the order or the count changed): markers, default, encoder, indent, key_separator,
# item_separator, sort_keys, skipkeys, allow_nan.
ENCODER_ARGS = ("markers", "default", "encoder", "indent", "key_separator", "item_separator",
                "sort_keys", "skipkeys", "allow_nan")
_ENCODER_VALUES = {"markers": None, "default": _default, "encoder": _json.encode_basestring_ascii,
                   "indent": None, "key_separator": ":", "item_separator": ",", "sort_keys": False,
                   "skipkeys": False, "allow_nan": True}
# A probe whose compact encoding is known: an interpreter whose make_encoder takes its arguments
# otherwise gets the json package's encoder (correct, only slower) instead of wrong output.
_PROBE = ({"a": [1, 2.5, None, True, "\u00e9"], "b": {}}, '{"a":[1,2.5,null,true,"\\u00e9"],"b":{}}')


def _make_encoder() -> Callable[[object, int], Iterable[str]]:
    try:
        args: tuple = tuple(_ENCODER_VALUES[name] for name in ENCODER_ARGS)
        enc: Callable[[object, int], Iterable[str]] = _json.make_encoder(*args)
        if "".join(enc(_PROBE[0], 0)) == _PROBE[1]:
            return enc
    except Exception:
        pass
    import json

    fallback = json.JSONEncoder(separators=(",", ":"), default=_default)
    return lambda obj, _level: fallback.iterencode(obj)


_encode = _make_encoder()


def dumps(obj: object) -> str:
    return "".join(_encode(obj, 0))


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in " \t\n\r":
        i += 1
    return i


def loads(s: str | bytes) -> object:
    if isinstance(s, (bytes, bytearray)):
        try:
            s = s.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONDecodeError(f"not UTF-8 text: {e}") from None
    i = _skip_ws(s, 0)
    try:
        obj, end = _scan(s, i)
        end = _skip_ws(s, end)
        if end == len(s):
            return obj
    except Exception:  # the C scanner reports errors through the json package
        pass
    return _explain(s)


def _explain(s: str) -> object:
    """Parse again with the full json package, only to get its precise error message."""
    import json

    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise JSONDecodeError(str(e)) from None
    except RecursionError:
        raise JSONDecodeError("arrays or objects are nested too deeply") from None
