#!/usr/bin/env python3
"""`runu list` over a root holding 1,000 containers (issue 6, concurrency).

One real container (a CRI sandbox running busybox `sleep`) is created; its state.json is the
template for 1,000 fabricated containers whose init is long gone (stopped). Prints the median
wall time of `runu list --format json` and of `runu list --quiet` as separate processes.

Run as root after scripts/setup.sh:  python3 bench/bench_list.py [-n 20] [--containers 1000]
"""

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
RUNU = shutil.which("runu") or "/usr/local/bin/runu"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--containers", type=int, default=1000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-list-")
    root = os.path.join(tmp, "root")
    bundle = os.path.join(tmp, "bundle")
    rootfs = os.path.join(bundle, "rootfs", "bin")
    os.makedirs(rootfs)
    shutil.copy("/bin/busybox", os.path.join(rootfs, "busybox"))
    spec = {"ociVersion": "1.0.2",
            "process": {"args": ["/bin/busybox", "sleep", "1000"], "env": ["PATH=/bin"], "cwd": "/"},
            "root": {"path": "rootfs"}, "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
            "linux": {"namespaces": [{"type": "network"}]}}
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    try:
        subprocess.run([RUNU, "--root", root, "create", "--bundle", bundle, "live"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(root, "live", "state.json")) as f:
            template = json.load(f)
        dead = subprocess.Popen(["true"])
        dead.wait()
        template.update(init_process_pid=dead.pid, init_process_start=1)
        for i in range(a.containers):
            d = os.path.join(root, f"many{i:04d}")
            os.mkdir(d, 0o711)
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump(dict(template, id=f"many{i:04d}"), f)
        print(f"runu list over {a.containers + 1} containers, {a.n} runs, median ms")
        for flags in (["--format", "json"], ["--quiet"]):
            times = []
            for _ in range(a.n):
                t0 = time.perf_counter()
                out = subprocess.run([RUNU, "--root", root, "list", *flags], check=True, capture_output=True).stdout
                times.append((time.perf_counter() - t0) * 1000)
            n = len(json.loads(out)) if "--quiet" not in flags else len(out.split())
            assert n == a.containers + 1, n
            print(f"list {' '.join(flags):<15} {statistics.median(times):8.1f}")
    finally:
        subprocess.run([RUNU, "--root", root, "delete", "--force", "live"], stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
