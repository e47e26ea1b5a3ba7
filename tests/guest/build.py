"""Build the tiny test guest kernel (standard library only).

The kernel lives in ``tests/guest/tiny/``: a few hundred lines of freestanding
32-bit C and assembly that read the command line the way Unikraft 0.16 does,
print what they parsed to COM1 and exit through QEMU's ``isa-debug-exit``
device (at 0xf4, or at 0x501 with Unikraft's values) or an i8042 reset (see
``tiny/kernel.c``).

Two flavours:

``pvh``
    ELF64 (EM_X86_64) with a ``Xen`` ELF note of type 18
    (XEN_ELFNOTE_PHYS32_ENTRY) in a PT_NOTE program header.  The code is
    32-bit (PVH enters in 32-bit protected mode): it is linked as ELF32 and
    converted with ``objcopy -O elf64-x86-64``.
``multiboot``
    ELF32 multiboot v1 image, like Unikraft's x86_64 QEMU builds.

Only ``gcc`` and ``binutils`` are needed: ``gcc -m32 -c`` on code that includes
no headers and calls nothing from libgcc works without gcc-multilib, and the
link is done with ``ld -m elf_i386`` directly.

Usage: ``build_tiny(outdir, "pvh")`` returns the kernel's path, rebuilding only
when a source file is newer than the kernel.  ``build_tiny(outdir, fmt,
no_9pfs=True)`` builds the variant without the 9pfs file system (``-DTINY_NO_9PFS``:
like a Unikraft image without lib9pfs, it stops at boot on a 9pfs ``vfs.fstab``
entry, and runu, which looks for the name, gives it no share).  From a shell::

    python3 tests/guest/build.py OUTDIR      # builds both, prints the paths
"""

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.path.join(HERE, "tiny")
FORMATS = ("pvh", "multiboot")

CFLAGS = [
    "-m32", "-Os", "-std=gnu11",
    "-ffreestanding", "-nostdlib", "-nostdinc", "-fno-builtin",
    "-fno-pic", "-fno-pie", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-fcf-protection=none", "-mgeneral-regs-only",
    "-Wall", "-Wextra",
]
LDFLAGS = [
    "-m", "elf_i386", "-nostdlib", "-static", "--build-id=none",
    "-z", "noexecstack", "-z", "max-page-size=0x1000",
]


class BuildError(RuntimeError):
    pass


def _tool(env_name, default):
    return os.environ.get(env_name) or default


def _run(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        raise BuildError("command failed (exit %d): %s\n%s"
                         % (proc.returncode, " ".join(argv), proc.stdout))


def _sources():
    """Every file the build depends on, this script included."""
    paths = [os.path.abspath(__file__)]
    for name in sorted(os.listdir(SRC_DIR)):
        paths.append(os.path.join(SRC_DIR, name))
    return paths


def _up_to_date(target):
    try:
        built = os.stat(target).st_mtime_ns
    except FileNotFoundError:
        return False
    return all(os.stat(p).st_mtime_ns <= built for p in _sources())


def build_tiny(outdir: str, fmt: str = "pvh", no_9pfs: bool = False) -> str:
    """Build the tiny kernel in flavour ``fmt`` (without 9pfs: ``no_9pfs``) into ``outdir``; return its path.

    Cached: nothing is rebuilt unless a source is newer than the kernel.  Safe
    to call concurrently (the kernel is renamed into place when complete).
    """
    if fmt not in FORMATS:
        raise ValueError("fmt must be one of %s, not %r" % (", ".join(FORMATS), fmt))
    os.makedirs(outdir, exist_ok=True)
    target = os.path.join(os.path.abspath(outdir), "tiny-%s%s.elf" % (fmt, "-no9pfs" if no_9pfs else ""))
    if _up_to_date(target):
        return target

    cc = _tool("CC", "gcc")
    ld = _tool("LD", "ld")
    objcopy = _tool("OBJCOPY", "objcopy")
    for tool in (cc, ld, objcopy):
        if shutil.which(tool) is None:
            raise BuildError("%s not found: install gcc and binutils" % tool)

    tmp = tempfile.mkdtemp(prefix=".tiny-%s-" % fmt, dir=outdir)
    try:
        head_o = os.path.join(tmp, "head.o")
        kernel_o = os.path.join(tmp, "kernel.o")
        linked = os.path.join(tmp, "linked.elf")
        _run([cc, *CFLAGS, "-c", os.path.join(SRC_DIR, "head_%s.S" % fmt),
              "-o", head_o])
        _run([cc, *CFLAGS, *(["-DTINY_NO_9PFS"] if no_9pfs else []), "-c", os.path.join(SRC_DIR, "kernel.c"),
              "-o", kernel_o])
        _run([ld, *LDFLAGS, "-T", os.path.join(SRC_DIR, "%s.ld" % fmt),
              head_o, kernel_o, "-o", linked])
        if fmt == "pvh":
            # 32-bit code in an ELF64 container: PVH loaders want ELF64.
            final = os.path.join(tmp, "final.elf")
            _run([objcopy, "-O", "elf64-x86-64", linked, final])
        else:
            final = linked
        os.replace(final, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def broken_pvh(outdir: str) -> str:
    """The PVH kernel with a loadable segment that claims 64 MiB of file: runu accepts it (a PVH ELF64),
    QEMU fails to load it and exits 1 at boot ("Error while loading elf kernel")."""
    import struct

    with open(build_tiny(outdir, "pvh"), "rb") as f:
        data = bytearray(f.read())
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    struct.pack_into("<QQ", data, phoff + 32, 64 << 20, 64 << 20)  # p_filesz, p_memsz of the first header
    target = os.path.join(os.path.abspath(outdir), "broken-pvh.elf")
    with open(target + ".tmp", "wb") as f:
        f.write(data)
    os.replace(target + ".tmp", target)
    return target


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: build.py OUTDIR", file=sys.stderr)
        return 2
    try:
        for fmt in FORMATS:
            print(build_tiny(argv[0], fmt))
    except BuildError as exc:
        print("build.py: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
