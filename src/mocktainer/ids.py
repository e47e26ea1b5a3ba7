"""Container ids: what a valid one is.

Its own module so that a command line can check an id (before using it in a
path) without importing the factory and everything it loads.
"""

from .error import InvalidIDError

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.")
MAX_ID_LEN = 255  # the id names a directory; NAME_MAX is 255 bytes


def validate_id(id: str) -> None:
    if not isinstance(id, str) or not id:
        raise InvalidIDError("invalid container id: it must not be empty")
    if id in (".", ".."):
        raise InvalidIDError(f"invalid container id {id!r}")
    if len(id) > MAX_ID_LEN:
        raise InvalidIDError(f"invalid container id: {len(id)} characters long; at most {MAX_ID_LEN} are allowed")
    bad = set(id) - ID_CHARS
    if bad:
        raise InvalidIDError(
            f"invalid container id {id!r}: only letters, digits and '_', '+', '-', '.' are allowed"
            f" (found {''.join(sorted(bad))!r})"
        )
