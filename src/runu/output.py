"""Printing for the command line: indented JSON and aligned tables."""

from mocktainer import fastjson


def pretty_json(obj: object, indent: str = "") -> str:
    """JSON indented by two spaces, like runc's `state` (the C encoder only does compact output)."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{fastjson.dumps(str(k))}: {pretty_json(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and obj:
        return "[\n" + ",\n".join(inner + pretty_json(v, inner) for v in obj) + "\n" + indent + "]"
    return fastjson.dumps(obj)


def printable(text: str) -> str:
    """`text` with every control or other non-printable character escaped (`\\n`, `\\x1b`, `\\u202e`): a guest
    argument or a bundle path from an image can neither start a row of its own nor drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def table(header: list[str], rows: list[list[str]]) -> str:
    rows = [[printable(str(c)) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)
