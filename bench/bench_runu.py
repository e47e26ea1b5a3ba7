#!/usr/bin/env python3
"""runu against runc and crun, the way containerd drives them; and a unikernel's boot through runu.

1. Lifecycle: create -> start -> state -> kill -> delete as separate processes with
   the flags containerd's shim passes (--root, --log, --log-format json, --pid-file),
   on one CRI-sandbox bundle running `sleep`, alternating the runtimes each
   iteration so machine noise hits them alike. runu hands such a bundle to its
   delegate OCI runtime, so the table sets runu->crun beside crun and runu->runc
   beside runc: the difference is what runu adds to every call (one interpreter
   start and a stat or two). Prints median ms per step, the total, and the ratios.
2. Boot: `runu create` + `runu start` until the tiny guest's greeting appears on
   the console, against the same VMM command line (and, for Firecracker, the same
   configuration file) started directly: QEMU (microvm, TCG) and, when it is
   installed and /dev/kvm works, Firecracker (KVM).

Run as root after scripts/setup.sh:  python3 bench/bench_runu.py [-n 50]
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
sys.path.insert(0, os.path.join(TOP, "src"))
sys.path.insert(0, os.path.join(TOP, "tests"))

from mocktainer import system  # noqa: E402

STEPS = ("create", "start", "state", "kill", "delete")
GREETING = b"Hello from the runu test kernel"


def sandbox_bundle(path: str) -> None:
    """A bundle all three runtimes accept: runc's default spec, busybox rootfs, a sleeping process."""
    rootfs = os.path.join(path, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for d in ("proc", "dev", "sys", "tmp"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", path], check=True)
    with open(os.path.join(path, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/busybox", "sleep", "1000"]
    spec.setdefault("annotations", {})["io.kubernetes.cri.container-type"] = "sandbox"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f)


def crun_usable() -> bool:
    return shutil.which("crun") is not None and not (
        os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers")
        and open("/sys/fs/cgroup/unified/cgroup.controllers").read().strip())


def lifecycle(binary: str, root: str, bundle: str, cid: str, env: dict[str, str] | None = None) -> dict[str, float]:
    base = [binary, "--root", root, "--log", os.path.join(bundle, "log.json"), "--log-format", "json"]
    pid_file = os.path.join(bundle, f"{cid}.pid")
    calls = {
        "create": base + ["create", "--bundle", bundle, "--pid-file", pid_file, cid],
        "start": base + ["start", cid],
        "state": base + ["state", cid],
        "kill": base + ["kill", cid, "9"],
        "delete": base + ["delete", cid],
    }
    out = {}
    # The container inherits create's stdio, so errors go to a file: a pipe would stay open.
    with tempfile.TemporaryFile() as err:
        for step in STEPS:
            t = time.perf_counter()
            r = subprocess.run(calls[step], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
            out[step] = (time.perf_counter() - t) * 1000
            if r.returncode != 0:
                err.seek(0)
                raise SystemExit(f"{os.path.basename(binary)} {step} failed: {err.read().decode().strip()}")
            _after(step, pid_file)
    os.unlink(pid_file)
    return out


def _after(step: str, pid_file: str) -> None:
    if step == "kill":
        # The shim reaps the container between kill and delete; here we are the subreaper.
        pid = int(open(pid_file).read())
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def median_ms(values: list[float]) -> float:
    return statistics.median(values)


def bench_lifecycle(n: int) -> None:
    runu = shutil.which("runu")
    runtimes = {"runc": shutil.which("runc"), "runu->runc": runu}
    if crun_usable():
        runtimes.update({"crun": shutil.which("crun"), "runu->crun": runu})
    runtimes = {k: v for k, v in runtimes.items() if v}
    envs = {rt: dict(os.environ, RUNU_DELEGATE=rt.split("->")[1]) for rt in runtimes if "->" in rt}
    results: dict[str, dict[str, list[float]]] = {rt: {s: [] for s in STEPS} for rt in runtimes}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = os.path.join(tmp, "bundle")
        sandbox_bundle(bundle)
        for i in range(n):
            for rt, binary in runtimes.items():
                name = rt.replace("->", "-")
                times = lifecycle(binary, os.path.join(tmp, name), bundle, f"{name}-{i}", envs.get(rt))
                for s, v in times.items():
                    results[rt][s].append(v)
    print(f"Lifecycle as separate processes with containerd's flags, {n} iterations, median ms")
    print(f"{'step':<8}" + "".join(f"{rt:>12}" for rt in runtimes))
    for s in STEPS + ("total",):
        row = []
        for rt in runtimes:
            if s == "total":
                totals = [sum(results[rt][k][i] for k in STEPS) for i in range(n)]
                row.append(median_ms(totals))
            else:
                row.append(median_ms(results[rt][s]))
        print(f"{s:<8}" + "".join(f"{v:>12.1f}" for v in row))
    for other in ("runc", "crun"):
        if other in runtimes:
            via = f"runu->{other}"
            tot = {rt: median_ms([sum(results[rt][k][i] for k in STEPS) for i in range(n)]) for rt in (via, other)}
            st = {rt: median_ms(results[rt]["state"]) for rt in (via, other)}
            print(f"{via} vs {other}: lifecycle {tot[via] / tot[other]:.2f}x (+{tot[via] - tot[other]:.1f} ms), "
                  f"state {st[via] / st[other]:.2f}x (+{st[via] - st[other]:.1f} ms)")


def wait_for(proc_out: int, needle: bytes, deadline: float) -> bool:
    buf = b""
    while time.monotonic() < deadline:
        chunk = os.read(proc_out, 4096)
        if not chunk:
            return False
        buf += chunk
        if needle in buf:
            return True
    return False


def bench_boot(n: int, backend: str = "qemu") -> None:
    from guest.build import build_tiny

    from mocktainer.unikraft.bundle import plan

    runu = shutil.which("runu")
    with tempfile.TemporaryDirectory() as tmp:
        kernel = build_tiny(os.path.join(tmp, "k"), "pvh")
        bundle = os.path.join(tmp, "bundle")
        os.makedirs(os.path.join(bundle, "rootfs", "unikraft", "bin"))
        shutil.copy(kernel, os.path.join(bundle, "rootfs", "unikraft", "bin", "kernel"))
        subprocess.run([runu, "spec", "--bundle", bundle], check=True)
        spec = json.load(open(os.path.join(bundle, "config.json")))
        spec["process"]["args"] = ["/unikraft/bin/kernel", "idle"]
        spec["annotations"] = {"org.unikraft.runu.vmm": backend}
        if backend == "qemu":
            spec["annotations"]["org.unikraft.runu.accel"] = "tcg"
        json.dump(spec, open(os.path.join(bundle, "config.json"), "w"))
        direct_dir = os.path.join(tmp, "direct")  # the VMM's files (Firecracker's configuration) for the direct runs
        os.makedirs(direct_dir)
        what = plan(spec, os.path.join(bundle, "rootfs"), dict(os.environ), direct_dir)
        for name, data in what.files.items():
            with open(os.path.join(direct_dir, name), "wb") as f:
                f.write(data)
        direct_argv = what.args
        via_runu, direct = [], []
        root = os.path.join(tmp, "state")
        for i in range(n):
            # Through runu: create + start, until the greeting reaches the console.
            r, w = os.pipe()
            t = time.perf_counter()
            subprocess.run([runu, "--root", root, "create", "--bundle", bundle, f"b{i}"], stdin=subprocess.DEVNULL,
                           stdout=w, stderr=w, check=True)
            os.close(w)
            subprocess.run([runu, "--root", root, "start", f"b{i}"], check=True)
            ok = wait_for(r, GREETING, time.monotonic() + 30)
            via_runu.append((time.perf_counter() - t) * 1000)
            subprocess.run([runu, "--root", root, "delete", "--force", f"b{i}"], check=True)
            os.close(r)
            if not ok:
                raise SystemExit("no greeting through runu")
            # The same QEMU command line, started directly.
            r, w = os.pipe()
            t = time.perf_counter()
            p = subprocess.Popen(direct_argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w)
            os.close(w)
            ok = wait_for(r, GREETING, time.monotonic() + 30)
            direct.append((time.perf_counter() - t) * 1000)
            p.kill()
            p.wait()
            os.close(r)
            if not ok:
                raise SystemExit(f"no greeting from {backend}")
        system_reap()
    a, b = median_ms(via_runu), median_ms(direct)
    how = "microvm, TCG" if backend == "qemu" else "Firecracker, KVM"
    print(f"\nTiny guest (PVH, {how}) to its greeting, {n} iterations, median ms")
    print(f"runu create+start {a:.1f}   {backend} direct {b:.1f}   ratio {a / b:.2f}x")


def system_reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description="runu vs runc/crun lifecycle, and unikernel boot through runu")
    ap.add_argument("-n", type=int, default=50, help="iterations (default 50)")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    system.set_child_subreaper()
    bench_lifecycle(opts.n)
    bench_boot(max(10, opts.n // 2), "qemu")
    from mocktainer.unikraft.qemu import kvm_usable

    if shutil.which("firecracker") and kvm_usable():
        bench_boot(max(10, opts.n // 2), "firecracker")
    else:
        print("\nFirecracker: not installed (bash scripts/setup-firecracker.sh) or /dev/kvm not usable; skipped")


if __name__ == "__main__":
    main()
