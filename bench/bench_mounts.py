#!/usr/bin/env python3
"""Files through runu's shares (docs/bundles.md, "Mounts"): throughput and the cost at create.

1. Throughput through virtio-fs (virtiofsd; the Linux test guest under TCG): reading a 64 MiB file
   (`cat | wc -c`) and creating 1,000 small files (a busybox shell loop), each timed inside the guest from
   /proc/uptime (centiseconds); beside the same loop on the guest's own tmpfs, and the same busybox
   commands on the host on the same directory. 9p is not measured here: the Debian cloud kernel of the
   Linux test guest has no 9p (CONFIG_NET_9P is not set) and the tiny kernel has no file system.
2. `runu create` with 10 mounts against none (median of -n runs), for the tiny kernel (virtio-9p devices
   only) and the Linux guest (one virtiofsd per share).

Run as root after scripts/setup.sh:  python3 bench/bench_mounts.py [-n 5]
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


def throughput(tmp: str, guest: tuple[str, str]) -> None:
    kernel, initrd = guest
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    with open(os.path.join(data, "big"), "wb") as f:
        for _ in range(BIG_MIB):
            f.write(os.urandom(1 << 20))
    b = bundle(os.path.join(tmp, "tp"), kernel, ["quiet", "readbench=/data/big", "createbench=/data/small",
                                                 "createbench=/tmp/small"],
               [bind(data, "/data", "rw")], initrd, GUEST_MIB)
    root = os.path.join(tmp, "root")
    r = subprocess.run([RUNU, "--root", root, "run", "--bundle", b, "bench-tp"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    got = guest_lines(r.stdout)
    if "readbench /data/big" not in got:
        print(r.stdout[-3000:], r.stderr[-2000:])
        raise SystemExit("the guest did not report")
    read_cs = int(got["readbench /data/big"].split(" in ")[1].split()[0])
    share_cs = int(got["createbench /data/small"].split(" in ")[1].split()[0])
    tmpfs_cs = int(got["createbench /tmp/small"].split(" in ")[1].split()[0])
    shutil.rmtree(os.path.join(data, "small"))
    host_read = host_seconds("cat %s/big | wc -c" % data)
    host_create = host_seconds("mkdir -p %s/small; i=0; while [ $i -lt 1000 ]; do echo $i > %s/small/f$i; "
                               "i=$((i + 1)); done" % (data, data))
    print("1. throughput (Linux guest under TCG, virtio-fs)")
    print("   read %d MiB:      guest via virtio-fs %7.1f MiB/s   host %7.1f MiB/s"
          % (BIG_MIB, BIG_MIB / max(read_cs / 100, 0.01), BIG_MIB / host_read))
    print("   create 1000 files: guest via virtio-fs %6.2f s   guest tmpfs %6.2f s   host %6.2f s"
          % (share_cs / 100, tmpfs_cs / 100, host_create))


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
            subprocess.run([RUNU, "--root", root, "create", "--bundle", b, cid], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=out, check=True, timeout=60)
            times.append((time.monotonic() - t0) * 1000)
        subprocess.run([RUNU, "--root", root, "delete", "--force", cid], capture_output=True, timeout=30)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="create runs per case (median)")
    opts = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-mounts-")
    try:
        guest = linux.build_linux_guest(os.path.join(tmp, "guest"))
        throughput(tmp, guest)
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
