"""JSON on the C accelerator alone.

`import json` costs ~8 ms here because its pure-Python halves pull in `re`;
every runu call and every container init reads or writes JSON, so this module
drives `_json`'s C scanner and encoder directly. Output is compact and ASCII,
like `json.dumps(obj, separators=(",", ":"))`.
"""

import _json

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


_encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


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
