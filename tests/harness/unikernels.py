"""Test data for the unikraft unit tests: synthetic kernel images, fake executables, and Unikraft's own
reading of a guest command line (to check what a guest would see)."""

import struct

from mocktainer.unikraft.kernel import Kernel

EM_RISCV = 243


def make_elf(elf_class=64, machine=62, *, big_endian=False, pvh=False, note_align=4,
             multiboot_at=None, multiboot_checksum_ok=True, other_note=False, linux_note=False,
             size=8192):
    """A minimal ELF executable header, optionally with a PVH note and a multiboot header."""
    end = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([1 if elf_class == 32 else 2, 2 if big_endian else 1, 1]) + bytes(9)
    def note(name, ntype, desc):
        pad = note_align - 1
        n = struct.pack(end + "III", len(name), len(desc), ntype) + name
        n += bytes(((len(n) + pad) & ~pad) - len(n)) + desc
        return n + bytes(((len(n) + pad) & ~pad) - len(n))

    notes = b""
    if other_note:
        notes += note(b"GNU\0", 1, b"\1\2\3\4\5")
    if linux_note:  # what a vmlinux carries (LINUX_ELFNOTE_BUILD_SALT is type 0x100)
        notes += note(b"Linux\0", 0x100, b"6.1.0\0")
    if pvh:
        notes += note(b"Xen\0", 18, struct.pack(end + "I", 0x100000))
    phnum = 2
    if elf_class == 64:
        ehsize, phentsize = 64, 56
    else:
        ehsize, phentsize = 52, 32
    phoff = ehsize
    note_off = phoff + phnum * phentsize
    if elf_class == 64:
        hdr = ident + struct.pack(end + "HHIQQQIHHHHHH", 2, machine, 1, 0x100000, phoff, 0, 0,
                                  ehsize, phentsize, phnum, 64, 0, 0)
        load = struct.pack(end + "IIQQQQQQ", 1, 5, 0, 0x100000, 0x100000, size, size, 0x1000)
        note = struct.pack(end + "IIQQQQQQ", 4 if notes else 6, 4, note_off, 0, 0, len(notes),
                           len(notes), note_align)
    else:
        hdr = ident + struct.pack(end + "HHIIIIIHHHHHH", 2, machine, 1, 0x100000, phoff, 0, 0,
                                  ehsize, phentsize, phnum, 40, 0, 0)
        load = struct.pack(end + "IIIIIIII", 1, 0, 0x100000, 0x100000, size, size, 5, 0x1000)
        note = struct.pack(end + "IIIIIIII", 4 if notes else 6, note_off, 0, 0, len(notes),
                           len(notes), 4, note_align)
    data = bytearray(hdr + load + note + notes)
    data += bytes(max(0, size - len(data)))
    if multiboot_at is not None:
        magic, flags = 0x1BADB002, 0x00010003
        checksum = (-(magic + flags)) & 0xFFFFFFFF
        if not multiboot_checksum_ok:
            checksum ^= 1
        mb = struct.pack("<III", magic, flags, checksum)
        if len(data) < multiboot_at + 12:
            data += bytes(multiboot_at + 12 - len(data))
        data[multiboot_at:multiboot_at + 12] = mb
    return bytes(data)


def make_bzimage():
    data = bytearray(4096)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, 0x020F)
    return bytes(data)


def make_rootfs(tmp_path, kernel_bytes=None, initrd=None, name="rootfs"):
    root = tmp_path / name
    (root / "unikraft" / "bin").mkdir(parents=True)
    if kernel_bytes is not None:
        (root / "unikraft" / "bin" / "kernel").write_bytes(kernel_bytes)
    if initrd is not None:
        (root / "unikraft" / "bin" / "initrd").write_bytes(initrd)
    return root


def fake_kernel(arch="x86_64", protocol="pvh", elf_class=64, initrd=None, linux=None):
    linux = protocol == "linux" if linux is None else linux
    return Kernel("/bundle/rootfs/unikraft/bin/kernel", initrd, arch, elf_class, protocol, linux)


def opt(args, name):
    """Values of every `name` option in an argv."""
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]


def make_exe(path, body="#!/bin/sh\nexit 0\n", mode=0o755):
    path.write_text(body)
    path.chmod(mode)
    return path


def uk_argnparse(line):
    """Python model of Unikraft's uk_argnparse: blanks split, quotes group, a backslash escapes outside
    single quotes (inside double quotes only before `"` or a backslash); quotes alone make no word."""
    argv, cur, in_word, quote, escape = [], [], False, None, False
    for ch in line:
        if escape:
            escape = False
            if quote == '"' and ch not in '"\\':
                cur.append("\\")
            cur.append(ch)
            continue
        if ch in " \r\n\t\v" and not quote:
            if in_word:
                argv.append("".join(cur))
                cur, in_word = [], False
            continue
        if ch in "'\"" and (not quote or quote == ch):
            quote = None if quote else ch
            continue
        in_word = True
        if ch == "\\" and quote != "'":
            escape = True
            continue
        cur.append(ch)
    if escape:
        cur.append("\\")
    if in_word:
        argv.append("".join(cur))
    return argv


def unikraft_argv(line, program=True):
    """(argv[0], library params, application args) as Unikraft 0.16's ukboot splits `line`: the first word is
    argv[0] (`program` False: QEMU's multiboot loader writes one first), the params run up to the first `--`
    outside a list when at least one word stands before it."""
    argv = uk_argnparse(line if program else "kernel " + line)
    rest, in_list = argv[1:], False
    for i, w in enumerate(rest):
        if in_list:
            in_list = not w.endswith("]")
        elif w == "--":
            if i > 0:
                return argv[0], rest[:i], rest[i + 1:]
            break
        elif "=" in w and w.split("=", 1)[1].startswith("["):
            value = w.split("=", 1)[1]
            in_list = not (len(value) > 1 and value.endswith("]"))
    return argv[0], [], rest


def unikraft_view(line, program=False):
    """(env, library params, application args) as a Unikraft kernel sees `line`."""
    _, params, app = unikraft_argv(line, program)
    env = [p[len("env.vars="):] for p in params if p.startswith("env.vars=")]
    return env, [p for p in params if not p.startswith("env.vars=") and p not in ("[", "]")], app


def exited(code):
    return code << 8


def killed(sig):
    return sig


def runu_plan(spec, rootfs, environ, *args, **kw):
    """bundle.plan as runu calls it: the runtime-wide settings from runu's RUNU_* variables and config
    file (RUNU_CONFIG) in `environ`."""
    from mocktainer.unikraft import bundle
    from runu import settings

    return bundle.plan(spec, rootfs, environ, *args, load_settings=settings.load, **kw)
