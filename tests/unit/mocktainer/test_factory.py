"""mocktainer.factory and mocktainer.error: container ids, and one base for the library's errors."""

import pytest

import mocktainer
from mocktainer.factory import validate_id


@pytest.mark.parametrize("cid", ["a", "A-Z_a.z+0-9", "x" * 255, "..a", "a..", "-"])
def test_valid_ids(cid):
    validate_id(cid)


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "/a", "a\\b", "a b", "a\0b", "é", "a:b", "x" * 256, "x" * 1024])
def test_invalid_ids(cid):
    with pytest.raises(mocktainer.InvalidIDError) as e:
        validate_id(cid)
    assert "container id" in str(e.value)


def test_errors_share_one_base():
    for cls in (mocktainer.ExistsError, mocktainer.InvalidIDError, mocktainer.NotExistError,
                mocktainer.RunningError, mocktainer.NotRunningError):
        assert issubclass(cls, mocktainer.Error)
