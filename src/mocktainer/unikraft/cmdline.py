"""The guest command line, written the way Unikraft 0.16 and later reads it (and Linux, for Linux guests).

A command line is built from its parts (`Line`): the program name (argv[0]) where the boot path does not
supply one, the library (or kernel) parameters, and the application's arguments. It is rendered at create
time and again when the guest network adds its parameters (`unikraft.net`, at create or at start): both renderings
come from here, so the rules below hold for every line a guest gets.

Unikraft's rules (lib/ukboot, lib/uklibparam, lib/ukargparse), and what `render` does about each:

1. The first word is argv[0] and is never parsed. QEMU's multiboot loader puts the kernel's path first;
   PVH boots (QEMU microvm) and Firecracker pass the line as is, so there `Line.program` comes first.
2. Library parameters are parsed only when a literal `--` follows them with at least one word between
   argv[0] and it; the words after it are argv[1..]. So the line is `[program] params -- args`, and with no
   parameters just `[program] args`. When the arguments themselves hold a `--` and there is no parameter,
   an empty list parameter (`env.vars=[ ]`, which sets nothing) goes before our `--`, so that the words in
   front of the application's own `--` are not taken for parameters.
3. Firecracker splits `boot_args` at the first ` -- ` and joins the parts again, inserting each
   virtio-mmio device's `virtio_mmio.device=` before it (or at the end when there is none), and drops the
   separator when nothing follows it. With a parameter the VMM appends (`vmm_appends`: Firecracker's NIC)
   and no application argument the line therefore ends in `-- ''`: Firecracker keeps the separator (`''`
   is not empty text) and the NIC's parameter lands before it, while Unikraft's splitter turns `''` into
   no word at all, so argv is exactly [program]. A ` -- ` inside a quoted word is written `-''-` so
   Firecracker cannot split there.
4. Words are split on blanks; `'...'` and `"..."` group, and a backslash escapes outside single quotes.
   A word with a blank, a quote or a backslash is wrapped in single quotes (a `'` inside written
   `'"'"'`). An empty word or a NUL byte cannot be carried and is refused.

Linux guests (`Line.linux`): the kernel takes its parameters before `--` and hands the words after it to
/init; a word with blanks is double-quoted (a `"` inside cannot be carried); there is no program name.
"""

from __future__ import annotations

from mocktainer.error import ConfigError

SEPARATOR = "--"
ENV_PARAM = "env.vars="
# A list parameter with no element: sets nothing, but makes the `--` after it a separator (rule 2).
EMPTY_PARAM = ("env.vars=[", "]")
# Firecracker keeps a separator followed by this; Unikraft reads no word from it (rule 3).
EMPTY_WORD = "''"
_SPECIAL = frozenset(" \t\n\r\v\f'\"\\")


class Line:
    """The parts of a guest command line: `program` (argv[0] to write, or None when the VMM supplies
    one), `params` (library or kernel parameters, one word each), `args` (the application's), `linux`."""

    __slots__ = ("program", "params", "args", "linux")

    def __init__(self, program: str | None, params: list[str], args: list[str], linux: bool = False) -> None:
        self.program = program
        self.params = list(params)
        self.args = list(args)
        self.linux = bool(linux)

    def as_dict(self) -> dict:
        return {"program": self.program, "params": self.params, "args": self.args, "linux": self.linux}

    @classmethod
    def from_dict(cls, d: dict) -> Line:
        return cls(d.get("program"), list(d.get("params") or []), list(d.get("args") or []),
                   bool(d.get("linux")))

    def __repr__(self) -> str:
        return "Line(%r, %r, %r, linux=%r)" % (self.program, self.params, self.args, self.linux)


def render(line: Line, *, vmm_appends: bool = False) -> str:
    """The text of `line` (see module doc); `vmm_appends`: the VMM adds a parameter of its own at the end
    (Firecracker's NIC, see firecracker.nic_cmdline)."""
    if line.linux:
        out = [linux_quote(p, "a kernel parameter") for p in line.params]
        if line.args:
            out += [SEPARATOR] + [linux_quote(a, "process.args") for a in line.args]
        return " ".join(out)
    out = [quote(line.program, "the program name")] if line.program else []
    params = list(line.params)
    if not params and SEPARATOR in line.args:
        params = list(EMPTY_PARAM)
    if params:
        out += [quote(p, "a library parameter") for p in params] + [SEPARATOR]
        if vmm_appends and not line.args:
            out.append(EMPTY_WORD)
    out += [quote(a, "process.args") for a in line.args]
    return " ".join(out)


def quote(word: str, what: str = "argument") -> str:
    """`word` as one token for Unikraft's command-line splitter."""
    if word == "":
        raise ConfigError("%s contains an empty string, which a Unikraft command line cannot carry" % what)
    if "\0" in word:
        raise ConfigError("%s %r contains a NUL byte, which a kernel command line cannot carry" % (what, word))
    if _SPECIAL.isdisjoint(word):
        return word
    inner = word.replace("'", "'\"'\"'")
    while " -- " in inner:
        inner = inner.replace(" -- ", " -''- ")
    return "'" + inner + "'"


def linux_quote(word: str, what: str = "argument") -> str:
    """`word` as one token of a Linux kernel command line (double quotes group blanks)."""
    if word == "":
        raise ConfigError("%s contains an empty string, which a kernel command line cannot carry" % what)
    if "\0" in word or '"' in word:
        raise ConfigError("%s %r contains a %s, which a Linux kernel command line cannot carry"
                          % (what, word, "NUL byte" if "\0" in word else "double quote"))
    if not any(c.isspace() for c in word):
        return word
    return '"' + word + '"'
