"""Build the Linux test guest: Debian's cloud kernel and a busybox-static initramfs (standard library only).

Inputs (``scripts/setup-linux-guest.sh`` puts them there):

- ``<repo>/.cache/linux-guest/root/``: the ``linux-image-6.1.0-NN-cloud-amd64``
  package extracted with ``dpkg-deb -x`` (not installed).  Its ``vmlinuz`` is a
  bzImage; the virtio drivers are modules.  The package has no ``modules.dep``
  (``depmod`` runs at install time), so dependencies are read from each module's
  ``.modinfo`` section.  ``LINUX_GUEST_CACHE`` overrides the directory.
- ``/bin/busybox`` from ``busybox-static`` (``BUSYBOX`` overrides it).
- ``linux_init.sh`` beside this file: the guest's ``/init`` (see its header for
  the command-line words it honours).

``build_linux_guest(outdir)`` returns ``(kernel_path, initrd_path)``: a copy (or
hard link) of the vmlinuz and a gzip-compressed newc initramfs holding busybox
and its applet links, the network modules (``virtio_net`` and what it needs,
plus the ``virtio_pci`` and ``virtio_mmio`` transports, ``virtio_blk``, and ``pvpanic``;
decompressed when the package ships them compressed), ``/dev/console`` and
``/init``.  ``build_linux_guest(outdir, cache, extra_groups)`` builds the same from another
extracted kernel package with more module groups (``bench/bench_mounts.py``: Debian's generic
kernel, which has 9p).  The initramfs is rebuilt only when an input changed (a digest of
the inputs is kept beside it), and written atomically.  From a shell::

    python3 tests/guest/linux.py OUTDIR      # prints the kernel and initrd paths

Boot it (TCG only on the project's machines: Linux crashes under their
paravirtual KVM; at least ~80 MiB of RAM: with 64 MiB the kernel resets while
decompressing, and with -no-reboot QEMU then exits 0 without a word)::

    qemu-system-x86_64 -M pc -accel tcg -cpu max -m 128M -nodefaults \\
        -no-user-config -display none -serial stdio -no-reboot \\
        -kernel vmlinuz -initrd initrd.gz -append "console=ttyS0 panic=-1 quiet"

``-M microvm`` (with ``-device virtio-net-device`` for a NIC, found through
ACPI) boots as fast, but it has neither HPET nor an ACPI PM timer: when the
TSC calibration against the PIT fails, which under TCG happened in 1 boot of
12 to 1 of 5 here, the kernel hangs early.  ``tsc_early_khz=<host TSC kHz>`` on the
command line avoids that; ``pc`` needs nothing.
"""

import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
INIT_SCRIPT = os.path.join(HERE, "linux_init.sh")
SETUP_SCRIPT = "scripts/setup-linux-guest.sh"
MARKER = "runu-linux-guest: "

# Module groups (each with its dependencies): /init loads "boot" first thing (pvpanic, so
# that a guest panic reaches QEMU when it has `-device pvpanic`), "net" before it
# configures the network (both virtio transports: PCI on `pc`/`q35`, MMIO on `microvm`).
MODULE_GROUPS = {
    "boot": ("pvpanic_mmio", "pvpanic_pci"),
    "net": ("virtio_pci", "virtio_mmio", "virtio_net"),
    # the ACPI power button (QEMU's system_powerdown) as an input device, for busybox acpid
    "acpi": ("button", "evdev"),
    # runu's shares (virtio-fs on PCI or MMIO; the cloud kernel has no 9p: CONFIG_NET_9P is not set)
    "fs": ("virtio_pci", "virtio_mmio", "fuse", "virtiofs"),
    # Firecracker's copy of runu's mounts: a read-only ext4 disk (ext4 is built in, virtio_blk is not)
    "blk": ("virtio_pci", "virtio_mmio", "virtio_blk"),
}


class GuestMissing(RuntimeError):
    """The kernel package or busybox-static is not there: run scripts/setup-linux-guest.sh."""


def cache_dir():
    return os.environ.get("LINUX_GUEST_CACHE") or os.path.join(TOP, ".cache", "linux-guest")


def busybox_path():
    return os.environ.get("BUSYBOX") or "/bin/busybox"


def kernel_tree(cache=None):
    """(vmlinuz path, modules directory) of the package extracted under `cache` (default `cache_dir()`)."""
    root = os.path.join(cache or cache_dir(), "root")
    boot = os.path.join(root, "boot")
    try:
        names = sorted(n for n in os.listdir(boot) if n.startswith("vmlinuz-"))
    except FileNotFoundError:
        names = []
    if not names:
        raise GuestMissing("no extracted Debian kernel under %s: run %s" % (boot, SETUP_SCRIPT))
    release = names[-1][len("vmlinuz-"):]
    moddir = os.path.join(root, "lib", "modules", release)
    if not os.path.isdir(moddir):
        raise GuestMissing("no %s: run %s" % (moddir, SETUP_SCRIPT))
    return os.path.join(boot, names[-1]), moddir


# -- kernel modules ---------------------------------------------------------------------------------------------

def _read_module(path):
    """The module's ELF bytes (decompressing .ko.xz / .ko.gz)."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        raise GuestMissing("%s is zstd-compressed; the standard library cannot decompress it" % path)
    return data


def _elf_section(data, wanted):
    """The bytes of section `wanted` of a little-endian ELF64 file, or b""."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)

    def header(i):
        # name, type, flags, addr, offset, size
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)

    strtab = header(shstrndx)
    names = data[strtab[4]:strtab[4] + strtab[5]]
    for i in range(shnum):
        h = header(i)
        end = names.index(b"\0", h[0])
        if names[h[0]:end] == wanted.encode():
            return data[h[4]:h[4] + h[5]]
    return b""


def _module_depends(data):
    for field in _elf_section(data, ".modinfo").split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[len(b"depends="):].decode().split(",") if d]
    return []


def _module_files(moddir):
    """Module name (dashes as underscores) -> path, for every module of the package."""
    found = {}
    for dirpath, _dirs, files in os.walk(os.path.join(moddir, "kernel")):
        for name in files:
            for ext in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
                if name.endswith(ext):
                    found[name[:-len(ext)].replace("-", "_")] = os.path.join(dirpath, name)
    return found


def _builtin(moddir):
    try:
        with open(os.path.join(moddir, "modules.builtin")) as f:
            return {os.path.basename(line.strip()).split(".ko")[0].replace("-", "_") for line in f}
    except FileNotFoundError:
        return set()


def resolve_modules(moddir, wanted, seen=None):
    """[(name, path, elf bytes)] for `wanted` and their dependencies, dependencies first; built-ins and the
    names in `seen` left out (`seen` is updated)."""
    files = _module_files(moddir)
    builtin = _builtin(moddir)
    order = []
    seen = set() if seen is None else seen

    def visit(name, chain):
        if name in seen or name in builtin:
            return
        if name in chain:
            raise ValueError("module dependency cycle: %s" % " -> ".join(chain + (name,)))
        if name not in files:
            raise GuestMissing("module %s is neither built in nor in %s" % (name, moddir))
        data = _read_module(files[name])
        for dep in _module_depends(data):
            visit(dep.replace("-", "_"), chain + (name,))
        seen.add(name)
        order.append((name, files[name], data))

    for name in wanted:
        visit(name, ())
    return order


# -- newc cpio --------------------------------------------------------------------------------------------------

class Cpio:
    """A newc ("070701") archive written in memory; every entry owned by root with mtime 0 (reproducible)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 0x1000

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        self.ino += 1
        name_b = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0)
        self.buf.write(b"070701" + b"".join(b"%08X" % v for v in fields))
        self.buf.write(name_b)
        self.buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name, mode=0o755):
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor, mode=0o600):
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0, nlink=1)
        return self.buf.getvalue()


def _busybox_applets(busybox):
    """Applet paths relative to / (e.g. "sbin/ip"), from `busybox --list-full`."""
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


def _check_static(data, path):
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3:  # PT_INTERP
            raise GuestMissing("%s is dynamically linked: install busybox-static" % path)


def build_initramfs(busybox, modules, init_script):
    """The gzip-compressed newc initramfs (bytes); `modules` maps a group name to resolve_modules' list."""
    with open(busybox, "rb") as f:
        bb = f.read()
    _check_static(bb, busybox)
    c = Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root",
              "lib", "lib/modules"):
        c.dir(d, 0o1777 if d == "tmp" else 0o755)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", bb, 0o755)
    for applet in _busybox_applets(busybox):
        if applet != "bin/busybox":
            depth = applet.count("/")
            c.symlink(applet, "../" * depth + "bin/busybox")
    for group, mods in modules.items():
        for name, _path, data in mods:
            c.file("lib/modules/%s.ko" % name, data)
        # One file name a line, dependencies first: /init insmods them in this order.
        c.file("lib/modules/%s.list" % group, "".join("%s.ko\n" % m[0] for m in mods).encode())
    with open(init_script, "rb") as f:
        c.file("init", f.read(), 0o755)
    return gzip.compress(c.finish(), compresslevel=6, mtime=0)


# -- the build --------------------------------------------------------------------------------------------------

def _digest(paths, extra=""):
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = os.stat(p)
        h.update(json.dumps([p, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


def _install_kernel(vmlinuz, dest):
    try:
        if os.path.samefile(vmlinuz, dest):
            return
    except FileNotFoundError:
        pass
    tmp = "%s.%d.tmp" % (dest, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        os.link(vmlinuz, tmp)
    except OSError:
        shutil.copyfile(vmlinuz, tmp)
    os.replace(tmp, dest)


def build_linux_guest(outdir, cache=None, extra_groups=None):
    """(kernel_path, initrd_path) in outdir; raises GuestMissing when the inputs are not there. `cache` names
    another extracted kernel package (default `cache_dir()`), `extra_groups` more module groups
    ({group: module names}, after MODULE_GROUPS) for /init to load (bench/bench_mounts.py's 9p)."""
    vmlinuz, moddir = kernel_tree(cache)
    busybox = busybox_path()
    if not os.path.exists(busybox):
        raise GuestMissing("%s not found: run %s (installs busybox-static)" % (busybox, SETUP_SCRIPT))
    os.makedirs(outdir, exist_ok=True)
    kernel = os.path.join(outdir, "vmlinuz")
    initrd = os.path.join(outdir, "initrd.gz")
    stamp = initrd + ".inputs"
    _install_kernel(vmlinuz, kernel)

    files = _module_files(moddir)
    inputs = [os.path.abspath(__file__), INIT_SCRIPT, busybox, vmlinuz] + sorted(files.values())
    groups = dict(MODULE_GROUPS, **(extra_groups or {}))
    digest = _digest(inputs, json.dumps(groups, sort_keys=True))
    try:
        with open(stamp) as f:
            if f.read().strip() == digest and os.path.exists(initrd):
                return kernel, initrd
    except FileNotFoundError:
        pass

    seen = set()
    modules = {group: resolve_modules(moddir, names, seen) for group, names in groups.items()}
    data = build_initramfs(busybox, modules, INIT_SCRIPT)
    fd, tmp = tempfile.mkstemp(dir=outdir, prefix=".initrd.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, initrd)
    tmp = "%s.%d.tmp" % (stamp, os.getpid())
    with open(tmp, "w") as f:
        f.write(digest + "\n")
    os.replace(tmp, stamp)
    return kernel, initrd


def main(argv):
    if len(argv) != 2:
        print("usage: %s OUTDIR" % argv[0], file=sys.stderr)
        return 2
    try:
        kernel, initrd = build_linux_guest(argv[1])
    except GuestMissing as e:
        print(e, file=sys.stderr)
        return 1
    print(kernel)
    print(initrd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
