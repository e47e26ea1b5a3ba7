#!/usr/bin/env python3
"""Time the library's whole lifecycle of /bin/true: create + start + exec + wait + destroy.

Prints the median (and quartiles) of each step over many iterations. Run as root:
    python3 bench/bench_library.py [-n 200] [--netns]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

import mocktainer  # noqa: E402
from mocktainer import specconv, system  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="iterations (default 200)")
    ap.add_argument("--netns", action="store_true", help="give each container a new network namespace")
    opts = ap.parse_args()
    system.set_child_subreaper()

    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "rootfs"))
        spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["/bin/true"]},
                "linux": {"namespaces": [{"type": "network"}] if opts.netns else []}}
        config = specconv.create_config(spec, tmp)
        root = os.path.join(tmp, "state")
        steps: dict[str, list[float]] = {k: [] for k in ("create", "start", "exec", "wait", "destroy", "total")}
        for i in range(opts.n):
            t0 = time.perf_counter()
            c = mocktainer.create(root, f"b{i}", config)
            t1 = time.perf_counter()
            p = mocktainer.Process(args=["/bin/true"], env=["PATH=/usr/bin:/bin"])
            c.start(p)
            t2 = time.perf_counter()
            c.exec()
            t3 = time.perf_counter()
            p.wait()
            t4 = time.perf_counter()
            c.destroy()
            t5 = time.perf_counter()
            for k, v in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0), strict=True):
                v_ms = v * 1000
                steps[k].append(v_ms)

    print(f"mocktainer lifecycle of /bin/true, {opts.n} iterations{' with a new netns' if opts.netns else ''} (ms)")
    print(f"{'step':<10}{'median':>10}{'p25':>10}{'p75':>10}")
    for k, vals in steps.items():
        q = statistics.quantiles(vals, n=4)
        print(f"{k:<10}{statistics.median(vals):>10.2f}{q[0]:>10.2f}{q[2]:>10.2f}")


if __name__ == "__main__":
    main()
