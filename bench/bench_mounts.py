#!/usr/bin/env python3
"""Files through runu's shares (docs/bundles.md, "Mounts"): throughput and the cost at create.

1. Throughput through virtio-fs and virtio-9p (the Linux test guest under TCG): reading a 64 MiB file
   (`cat | wc -c`) and creating 1,000 small files (a busybox shell loop), each timed inside the guest from
   /proc/uptime (centiseconds); beside the same loop on the guest's own tmpfs, and the same busybox
   commands on the host on the same directory. virtio-fs as runu gives it (`runu run`, the cloud kernel
   of the test guest and Debian's generic kernel of the same version); then both transports on the generic
   kernel (the cloud kernel has no 9p: CONFIG_NET_9P is not set) through a QEMU started here with the
   arguments runu's own builders give (qemu.qemu_args; mounts.qemu_args: virtio-9p as for a unikernel,
   virtio-fs with runu's virtiofsd arguments), since runu gives a Linux guest no 9p. The generic kernel
   package is fetched with `apt-get download` into .cache/linux-guest-generic/ (only the vmlinuz and the
   modules the guest loads are kept). 9p is mounted with msize=524288 (the kernel takes 512000, its
   virtio maximum), with and without cache=loose.
2. `runu create` with 10 mounts against none (median of -n runs), for the tiny kernel (virtio-9p devices
   only) and the Linux guest (one virtiofsd per share).

Run as root after scripts/setup.sh:  python3 bench/bench_mounts.py [-n 5] [-r 2] [--only throughput|create]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests"))
sys.path.insert(0, os.path.join(TOP, "src"))
import clients  # noqa: E402
from guest import linux  # noqa: E402
from guest.build import build_tiny  # noqa: E402

RUNU = shutil.which("runu") or os.path.join(TOP, ".venv/bin/runu")
BUSYBOX = "/bin/busybox"
GUEST_MIB = 256
BIG_MIB = 64
TCG = {"org.unikraft.runu.accel": "tcg"}
# 9p: Debian's generic kernel of the cloud one's version (the cloud kernel has no 9p), fetched on demand.
GENERIC_CACHE = os.path.join(TOP, ".cache", "linux-guest-generic")
CLOUD_SUFFIX = "-cloud-amd64"
NINEP_GROUP = {"9p": ("virtio_pci", "9pnet_virtio", "9p")}
MSIZE = 512 << 10


def bundle(dest: str, kernel: str, args: list[str], mounts: list[dict], initrd: str | None = None,
           memory_mib: int | None = None) -> str:
    b = clients.unikernel_bundle(dest, kernel, args, initrd=initrd, annotations=TCG,
                                 resources={"memory": {"limit": (memory_mib + 72) << 20}} if memory_mib else {})
    path = os.path.join(b, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["mounts"] = list(cfg.get("mounts") or []) + mounts
    with open(path, "w") as f:
        json.dump(cfg, f)
    return b


def bind(src: str, dest: str, *opts: str) -> dict:
    return {"destination": dest, "type": "bind", "source": src, "options": ["rbind", *opts]}


def guest_lines(out: str) -> dict[str, str]:
    got = {}
    for line in out.splitlines():
        if linux.MARKER in line:
            text = line.split(linux.MARKER, 1)[1].strip()
            if ": " in text:
                k, v = text.split(": ", 1)
                got[k] = v
    return got


def host_seconds(script: str) -> float:
    t0 = time.monotonic()
    subprocess.run([BUSYBOX, "sh", "-c", script], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


# -- the generic kernel (9p) --------------------------------------------------------------------------------

def generic_package() -> str:
    """The generic kernel package of the cloud one's version (linux-image-6.1.0-NN-amd64)."""
    try:
        with open(os.path.join(linux.cache_dir(), "package")) as f:
            cloud = f.read().strip()
    except FileNotFoundError:
        raise SystemExit("no Linux test guest: run %s" % linux.SETUP_SCRIPT) from None
    if not cloud.endswith(CLOUD_SUFFIX):
        raise SystemExit("%s is not a cloud kernel package: cannot name its generic twin" % cloud)
    return cloud[:-len(CLOUD_SUFFIX)] + "-amd64"


def generic_kernel() -> str:
    """GENERIC_CACHE holding the generic kernel's vmlinuz and the modules the bench guest loads (with their
    dependencies; the rest of the 400 MB package is not kept), fetched with `apt-get download` when absent."""
    pkg = generic_package()
    wanted = sorted({m for names in list(linux.MODULE_GROUPS.values()) + list(NINEP_GROUP.values())
                     for m in names})
    stamp = os.path.join(GENERIC_CACHE, "package")
    want_stamp = "%s %s\n" % (pkg, " ".join(wanted))
    try:
        with open(stamp) as f:
            if f.read() == want_stamp:
                linux.kernel_tree(GENERIC_CACHE)
                return GENERIC_CACHE
    except (FileNotFoundError, linux.GuestMissing):
        pass
    os.makedirs(GENERIC_CACHE, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=GENERIC_CACHE, prefix=".dl.")
    os.chmod(tmp, 0o755)  # apt downloads as _apt when it can write there
    try:
        print("fetching %s (apt-get download) into %s" % (pkg, GENERIC_CACHE), flush=True)
        if subprocess.run(["apt-get", "download", "-q", pkg], cwd=tmp, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "download", "-q", pkg], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        deb = next(os.path.join(tmp, n) for n in os.listdir(tmp) if n.endswith(".deb"))
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "root")], check=True)
        vmlinuz, moddir = linux.kernel_tree(tmp)
        full = os.path.join(tmp, "root")
        keep = os.path.join(tmp, "keep", "root")
        paths = [vmlinuz, os.path.join(moddir, "modules.builtin")]
        paths += [path for _name, path, _data in linux.resolve_modules(moddir, wanted)]
        for path in paths:
            dest = os.path.join(keep, os.path.relpath(path, full))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(path, dest)
        shutil.rmtree(os.path.join(GENERIC_CACHE, "root"), ignore_errors=True)
        os.rename(keep, os.path.join(GENERIC_CACHE, "root"))
        with open(stamp, "w") as f:
            f.write(want_stamp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return GENERIC_CACHE


# -- one guest, its share through runu (virtio-fs) or through QEMU started here -----------------------------

def bench_args(share_dir: str) -> list[str]:
    return ["quiet", "zerofile=/tmp/big:%d" % BIG_MIB, "readbench=%s/big" % share_dir, "readbench=/tmp/big",
            "createbench=%s/small" % share_dir, "createbench=/tmp/small"]


def figures(out: str, err: str, share_dir: str) -> dict[str, Any]:
    """{"read": MiB/s, "create": s, "tmpfs read": MiB/s, "tmpfs": s (create)} from the guest's lines (and
    "mount": the 9p mount's options)."""
    got = guest_lines(out)
    key = "readbench %s/big" % share_dir
    if key not in got:
        print(out[-3000:], err[-2000:])
        raise SystemExit("the guest did not report")

    def cs(k: str) -> int:
        return int(got[k].split(" in ")[1].split()[0])
    return {"read": BIG_MIB / max(cs(key) / 100, 0.01), "create": cs("createbench %s/small" % share_dir) / 100,
            "tmpfs read": BIG_MIB / max(cs("readbench /tmp/big") / 100, 0.01),
            "tmpfs": cs("createbench /tmp/small") / 100, "mount": got.get("mount9p %s" % share_dir, "")}


def through_runu(tmp: str, name: str, guest: tuple[str, str], data: str) -> dict[str, Any]:
    """The guest as a container (`runu run`): the share is a bind mount, which runu gives a Linux guest
    through virtio-fs."""
    kernel, initrd = guest
    b = bundle(os.path.join(tmp, name), kernel, bench_args("/data"), [bind(data, "/data", "rw")], initrd,
               GUEST_MIB)
    r = subprocess.run([RUNU, "--root", os.path.join(tmp, "root"), "run", "--bundle", b, "bench-" + name],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    return figures(r.stdout, r.stderr, "/data")


def through_qemu(tmp: str, name: str, guest: tuple[str, str], state: str, transport: str,
                 options: str = "") -> dict[str, Any]:
    """The guest booted by QEMU started here, with runu's own arguments (qemu.qemu_args for the machine,
    mounts.qemu_args for the share: virtio-9p as runu gives a unikernel, or virtio-fs with runu's virtiofsd
    arguments), the share being `state`/shares/m0; the guest mounts it on /data itself."""
    from mocktainer.unikraft import bundle as ubundle
    from mocktainer.unikraft import kernel as ukernel
    from mocktainer.unikraft import mounts, qemu

    kernel, initrd = guest
    rootfs = os.path.join(bundle(os.path.join(tmp, name), kernel, [], [], initrd, GUEST_MIB), "rootfs")
    k = ukernel.find_kernel(rootfs)
    assert k is not None
    share = mounts.Share("m0", os.path.join(state, mounts.SHARES_DIR, "m0"), "/data", False)
    if transport == "9p":
        words = ["mount9p=m0:/data" + (":" + options if options else "")]
    else:
        words = mounts.linux_params([share])
    # as runu writes it: its parameters, then `--` and the process's arguments (for the guest's init)
    cmdline = ubundle.linux_cmdline(words + ["--"] + bench_args("/data"), (), qemu.linux_params(k))
    binary = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
    args = qemu.qemu_args(binary, k, memory_mib=GUEST_MIB, cmdline=cmdline, accel="tcg",
                          sandbox=qemu.has_seccomp(binary))
    devices = mounts.qemu_args([share], state, qemu.machine_for(k, None), transport != "9p", GUEST_MIB)
    args += devices
    helper = None
    # virtiofsd's messages (it says "Unexpected poll revents" when QEMU goes away) are shown only on failure
    with tempfile.TemporaryFile("w+") as helper_err:
        if transport != "9p":
            fd = mounts.listen(state, share)
            try:
                helper = subprocess.Popen(mounts.virtiofsd_args(state, share, fd), pass_fds=(fd,),
                                          stdin=subprocess.DEVNULL, stderr=helper_err)
            finally:
                os.close(fd)
        try:
            r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        finally:
            if helper is not None:
                try:
                    helper.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    helper.kill()
                    helper.wait()
        helper_err.seek(0)
        got = figures(r.stdout, r.stderr + helper_err.read(), "/data")
    got["devices"] = " ".join(devices)
    return got


def throughput(tmp: str, cloud: tuple[str, str], generic: tuple[str, str], rounds: int) -> None:
    # The share's directory: state/shares/m0, where runu's argument builders look for share m0.
    state = os.path.join(tmp, "state")
    data = os.path.join(state, "shares", "m0")
    os.makedirs(data)
    with open(os.path.join(data, "big"), "wb") as f:
        for _ in range(BIG_MIB):
            f.write(os.urandom(1 << 20))
    small = os.path.join(data, "small")
    cases = [
        ("virtio-fs, runu run, cloud kernel", lambda: through_runu(tmp, "runu-cloud", cloud, data)),
        ("virtio-fs, runu run, generic kernel", lambda: through_runu(tmp, "runu-generic", generic, data)),
        ("virtio-fs, QEMU here, generic kernel", lambda: through_qemu(tmp, "qemu-vfs", generic, state, "vfs")),
        ("9p msize=%d, QEMU here, generic kernel" % MSIZE,
         lambda: through_qemu(tmp, "qemu-9p", generic, state, "9p", "msize=%d" % MSIZE)),
        ("9p msize=%d cache=loose, QEMU here, generic kernel" % MSIZE,
         lambda: through_qemu(tmp, "qemu-9p-loose", generic, state, "9p", "msize=%d,cache=loose" % MSIZE)),
    ]
    print("1. throughput (Linux guest under TCG, %d MiB RAM; timed inside the guest), %d round(s)"
          % (GUEST_MIB, rounds))
    print("   %-54s %10s %10s %14s %14s" % ("", "read MiB/s", "create s", "tmpfs rd MiB/s", "tmpfs create s"))
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _run in cases}
    hosts = []
    for n in range(rounds):
        print("   round %d (load average %.2f %.2f %.2f)" % ((n + 1,) + os.getloadavg()), flush=True)
        for label, run in cases[n % len(cases):] + cases[:n % len(cases)]:  # each round starts one later
            shutil.rmtree(small, ignore_errors=True)
            got = run()
            results[label].append(got)
            print("   %-54s %10.1f %10.2f %14.1f %14.2f" % (label, got["read"], got["create"], got["tmpfs read"],
                                                          got["tmpfs"]), flush=True)
            if len(results[label]) == 1 and got.get("devices"):
                print("     QEMU: %s" % got["devices"].replace(state, "<state>"))
            if len(results[label]) == 1 and got["mount"]:
                print("     the guest's 9p mount: %s" % got["mount"])
        shutil.rmtree(small, ignore_errors=True)
        host_read = host_seconds("cat %s/big | wc -c" % data)
        host_create = host_seconds("mkdir -p %s; i=0; while [ $i -lt 1000 ]; do echo $i > %s/f$i; "
                                   "i=$((i + 1)); done" % (small, small))
        hosts.append({"read": BIG_MIB / host_read, "create": host_create})
        print("   %-54s %10.1f %10.2f" % ("host (busybox, same directory)", BIG_MIB / host_read, host_create),
              flush=True)
    results["host (busybox, same directory)"] = hosts
    print("   all rounds (read MiB/s | create s | guest tmpfs: read MiB/s | create s):")
    for label, runs in results.items():
        print("   %-54s %s" % (label, " | ".join(" / ".join(fmt % r[key] for r in runs) for key, fmt in
                                            (("read", "%.1f"), ("create", "%.2f"), ("tmpfs read", "%.1f"),
                                             ("tmpfs", "%.2f")) if key in runs[0])))


def create_ms(tmp: str, name: str, kernel: str, initrd: str | None, n_mounts: int, runs: int) -> float:
    vols = []
    for i in range(n_mounts):
        d = os.path.join(tmp, "%s-vol%d" % (name, i))
        os.makedirs(d, exist_ok=True)
        vols.append(bind(d, "/v%d" % i, "ro" if i % 2 else "rw"))
    b = bundle(os.path.join(tmp, "%s-%d" % (name, n_mounts)), kernel, ["quiet"] if initrd else ["hello"], vols,
               initrd, 128 if initrd else None)
    root = os.path.join(tmp, "root-create")
    times = []
    for i in range(runs):
        cid = "%s-%d-%d" % (name, n_mounts, i)
        with open(os.path.join(tmp, "create.out"), "w") as out:
            t0 = time.monotonic()
            # no timeout=: subprocess then polls the child with sleeps of up to 50 ms, which the figure would count
            subprocess.run([RUNU, "--root", root, "create", "--bundle", b, cid], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=out, check=True)
            times.append((time.monotonic() - t0) * 1000)
        subprocess.run([RUNU, "--root", root, "delete", "--force", cid], capture_output=True, timeout=30)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="create runs per case (median)")
    ap.add_argument("-r", "--rounds", type=int, default=2, help="rounds of the throughput cases (interleaved)")
    ap.add_argument("--only", choices=("throughput", "create"), help="one part only")
    opts = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-mounts-")
    try:
        guest = linux.build_linux_guest(os.path.join(tmp, "guest"))
        if opts.only != "create":
            generic = linux.build_linux_guest(os.path.join(tmp, "generic"), generic_kernel(), NINEP_GROUP)
            throughput(tmp, guest, generic, opts.rounds)
        if opts.only == "throughput":
            return 0
        tiny = build_tiny(os.path.join(tmp, "tiny"), "pvh")
        print("2. runu create, median of %d (ms)" % opts.n)
        for name, kernel, initrd in (("tiny", tiny, None), ("linux", guest[0], guest[1])):
            none = create_ms(tmp, name, kernel, initrd, 0, opts.n)
            ten = create_ms(tmp, name, kernel, initrd, 10, opts.n)
            print("   %-6s no mount %6.1f   10 mounts %6.1f   (+%.1f)" % (name, none, ten, ten - none))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
