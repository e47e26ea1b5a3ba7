"""runu.output: JSON and table output formatted like runc's."""

import json

import pytest

from runu.output import pretty_json, table


@pytest.mark.parametrize("obj", [{}, [], {"a": 1, "b": [1, {"c": None}], "d": {}}, [True, "x\"y", 1.5]])
def test_pretty_json_is_json(obj):
    text = pretty_json(obj)
    assert json.loads(text) == obj


def test_pretty_json_indents_like_runc():
    assert pretty_json({"a": [1]}) == '{\n  "a": [\n    1\n  ]\n}'


def test_table_aligns_columns():
    assert table(["ID", "PID"], [["a", "1"], ["long-id", "22"]]).splitlines() == [
        "ID        PID", "a         1", "long-id   22"]
