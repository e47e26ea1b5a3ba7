"""mocktainer.fastjson: same answers as json, and a clear failure if CPython's private encoder changes."""

import json

import pytest

from mocktainer import fastjson


@pytest.mark.parametrize("obj", [{}, [], {"a": [1, 2.5, None, True, False, "é\n\"\\"]}, "x", 0, -1.5e300])
def test_fastjson_matches_json(obj):
    assert json.loads(fastjson.dumps(obj)) == obj
    assert fastjson.loads(json.dumps(obj, indent=2)) == obj


@pytest.mark.parametrize("text", ["", "{", "{\"a\":1} x", "[1,]", "nul", "{'a': 1}", b"\xff"])
def test_fastjson_errors(text):
    with pytest.raises(ValueError):
        fastjson.loads(text)


def test_fastjson_drives_make_encoder_as_json_does(monkeypatch):
    """fastjson calls CPython's private `_json.make_encoder` positionally. Record the arguments this
    interpreter's own json.encoder passes to it and check, by role, that fastjson passes its values in the
    same order: a Python where the signature changed fails here, by name, instead of encoding wrongly."""
    import json.encoder as je

    seen = []

    def recorder(*args):
        seen.append(args)
        return lambda obj, level: iter(())

    monkeypatch.setattr(je, "c_make_encoder", recorder)
    marker = object()

    def default(o):
        return marker

    je.JSONEncoder(separators=(",", ":"), default=default, ensure_ascii=True, sort_keys=False, skipkeys=False,
                   allow_nan=True).iterencode({"k": 1}, _one_shot=True)
    if not seen:  # this json.encoder no longer uses the C encoder: nothing to mirror
        pytest.fail("json.encoder did not call c_make_encoder; fastjson's use of _json.make_encoder is unchecked")
    args = seen[0]
    assert len(args) == len(fastjson.ENCODER_ARGS), (args, fastjson.ENCODER_ARGS)
    roles = dict(zip(fastjson.ENCODER_ARGS, args, strict=True))
    assert isinstance(roles["markers"], dict)  # json passes its circular-reference markers
    assert roles["default"] == default
    assert roles["encoder"] is json.encoder.encode_basestring_ascii or roles["encoder"].__name__.startswith(
        "encode_basestring")
    assert roles["indent"] is None
    assert (roles["key_separator"], roles["item_separator"]) == (":", ",")
    assert (roles["sort_keys"], roles["skipkeys"], roles["allow_nan"]) == (False, False, True)
    assert isinstance(fastjson._encode, _json_encoder_type()), "fastjson fell back to the slow encoder here"


def _json_encoder_type():
    import _json

    return type(_json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True))
