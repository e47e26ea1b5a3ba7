#!/usr/bin/env python3
"""runu against runc and crun, the way containerd drives them; and a unikernel's boot through runu.

1. Lifecycle: create -> start -> state -> kill -> delete as separate processes with
   the flags containerd's shim passes (--root, --log, --log-format json, --pid-file),
   on one CRI-sandbox bundle running `sleep`, alternating the runtimes each
   iteration so machine noise hits them alike. runu hands such a bundle to its
   delegate OCI runtime, so the table sets runu->crun beside crun and runu->runc
   beside runc: the difference is what runu adds to every call (one interpreter
   start and a stat or two). Prints median ms per step, the total, and the ratios.
2. Start: `runu start` until the tiny guest's first line on the console (the VMM was
   prepared at create), against `runc start` until the first line of an `echo`
   container.
3. Boot: `runu create` + `runu start` until the tiny guest's greeting appears on
   the console, against the same VMM command line (and, for Firecracker, the same
   configuration file) started directly: QEMU (microvm, TCG) and, when it is
   installed and /dev/kvm works, Firecracker (KVM).
4. The unikernel's lifecycle (create, start, state, kill, delete), with `--baseline`
   an older runu side by side.
5. Density: 50 tiny guests created and started at once, each by its own `runu
   create` and `runu start` processes (as shims do), until the last greeting,
   against 50 QEMUs started directly.
6. CPU time of create + start + delete: runu's commands (and the container's
   supervisor) against runc's.
7. Memory of a created container: supervisor + paused VMM against runc's init.
8. Floors: what no runu could go below under the project's rules (CPython's start-up is the floor of
   every call; `create` returns once the VMM is ready): the interpreter's start-up with `os`, QEMU
   from its start to a ready monitor (-S) and from `cont` to the greeting, measured directly, and the
   ratios they alone already give against each target.

Run as root after scripts/setup.sh:  python3 bench/bench_runu.py [-n 50] [--runu PATH] [--baseline PATH]
"""

import argparse
import json
import resource
import threading
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
RUNU = shutil.which("runu") or "runu"
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
    runu = RUNU
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


def tiny_bundle(tmp: str, backend: str = "qemu", runu: str | None = None) -> tuple[str, dict]:
    """A bundle of the tiny test kernel that idles (QEMU: TCG); (bundle, spec)."""
    from guest.build import build_tiny

    kernel = build_tiny(os.path.join(tmp, "k"), "pvh")
    bundle = os.path.join(tmp, "bundle")
    os.makedirs(os.path.join(bundle, "rootfs", "unikraft", "bin"))
    shutil.copy(kernel, os.path.join(bundle, "rootfs", "unikraft", "bin", "kernel"))
    subprocess.run([runu or RUNU, "spec", "--bundle", bundle], check=True)
    spec = json.load(open(os.path.join(bundle, "config.json")))
    spec["process"]["args"] = ["/unikraft/bin/kernel", "idle"]
    spec["process"]["env"] = []  # the guest command line is just "idle": the tiny kernel stays up
    spec["annotations"] = {"org.unikraft.runu.vmm": backend}
    if backend == "qemu":
        spec["annotations"]["org.unikraft.runu.accel"] = "tcg"
    json.dump(spec, open(os.path.join(bundle, "config.json"), "w"))
    return bundle, spec


def _direct_argv(tmp: str, backend: str = "qemu") -> tuple[str, list[str]]:
    """The tiny guest's bundle in `tmp`, and the VMM command runu plans for it, to run directly (its files,
    Firecracker's configuration, written beside it; Firecracker without its API, booting at once)."""
    from mocktainer.unikraft.bundle import plan

    bundle, spec = tiny_bundle(tmp, backend)
    direct_dir = os.path.join(tmp, "direct")
    os.makedirs(direct_dir)
    what = plan(spec, os.path.join(bundle, "rootfs"), dict(os.environ), direct_dir)
    for name, data in what.files.items():
        with open(os.path.join(direct_dir, name), "wb") as f:
            f.write(data)
    if backend == "firecracker":
        return bundle, [what.args[0], "--no-api", "--config-file", os.path.join(direct_dir, "firecracker.json"),
                        "--level", "Error"]
    return bundle, list(what.args)


def bench_boot(n: int, backend: str = "qemu") -> None:
    runu = RUNU
    with tempfile.TemporaryDirectory() as tmp:
        bundle, direct_argv = _direct_argv(tmp, backend)
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
            direct.append(_direct_greeting(direct_argv))  # the same VMM command, started directly
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


def echo_bundle(path: str) -> None:
    """runc's default spec, busybox rootfs, a process that prints one line and exits."""
    sandbox_bundle(path)
    with open(os.path.join(path, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["args"] = ["/bin/busybox", "echo", "hello from runc"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f)


def _first_line_after_start(binary: str, root: str, bundle: str, cid: str, needle: bytes) -> float:
    """create (untimed), then `start` until `needle` appears on the container's stdout; ms."""
    r, w = os.pipe()
    subprocess.run([binary, "--root", root, "create", "--bundle", bundle, cid], stdin=subprocess.DEVNULL, stdout=w,
                   stderr=w, check=True)
    os.close(w)
    t = time.perf_counter()
    subprocess.run([binary, "--root", root, "start", cid], stdin=subprocess.DEVNULL, check=True)
    ok = wait_for(r, needle, time.monotonic() + 30)
    ms = (time.perf_counter() - t) * 1000
    os.close(r)
    subprocess.run([binary, "--root", root, "delete", "--force", cid], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    system_reap()
    if not ok:
        raise SystemExit(f"{binary}: no {needle!r} after start")
    return ms


def tiny_and_runc_bundles(tmp: str, make) -> tuple[str, str]:
    """The tiny guest's bundle and a runc bundle made by `make` (echo_bundle, sandbox_bundle) in `tmp`."""
    bundle, _ = tiny_bundle(tmp)
    other = os.path.join(tmp, make.__name__)
    make(other)
    return bundle, other


def bench_start(n: int) -> None:
    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory() as tmp:
        bundle, echo = tiny_and_runc_bundles(tmp, echo_bundle)
        via_runu, via_runc = [], []
        for i in range(n):
            via_runu.append(_first_line_after_start(RUNU, os.path.join(tmp, "runu"), bundle, f"s{i}", GREETING))
            if runc:
                via_runc.append(_first_line_after_start(runc, os.path.join(tmp, "runc"), echo, f"s{i}",
                                                        b"hello from runc"))
    a = median_ms(via_runu)
    print(f"\n`start` to the first line, {n} iterations, median ms")
    if via_runc:
        b = median_ms(via_runc)
        print(f"runu start -> tiny guest {a:.1f}   runc start -> echo {b:.1f}   ratio {a / b:.2f}x")
    else:
        print(f"runu start -> tiny guest {a:.1f}   (runc not installed)")


def bench_unikernel_lifecycle(n: int, baseline: str | None) -> None:
    runtimes = {"runu": RUNU}
    if baseline:
        runtimes["baseline"] = baseline
    results: dict[str, dict[str, list[float]]] = {rt: {s: [] for s in STEPS} for rt in runtimes}
    with tempfile.TemporaryDirectory() as tmp:
        bundle, _ = tiny_bundle(tmp)
        for i in range(n):
            for rt, binary in runtimes.items():
                for s, v in lifecycle(binary, os.path.join(tmp, rt), bundle, f"{rt}-{i}").items():
                    results[rt][s].append(v)
        system_reap()
    print(f"\nUnikernel lifecycle (tiny guest, QEMU TCG) as separate processes, {n} iterations, median ms")
    print(f"{'step':<8}" + "".join(f"{rt:>10}" for rt in runtimes))
    for s in STEPS + ("total",):
        row = [median_ms([sum(results[rt][k][i] for k in STEPS) for i in range(n)]) if s == "total"
               else median_ms(results[rt][s]) for rt in runtimes]
        print(f"{s:<8}" + "".join(f"{v:>10.1f}" for v in row))


def _greetings(fds: list[int], t0: float, timeout: float = 120) -> list[float]:
    """Seconds from t0 until each fd showed the greeting."""
    import select

    poller = select.poll()
    bufs = {fd: b"" for fd in fds}
    seen: dict[int, float] = {}
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while len(seen) < len(fds):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {len(fds)} greetings")
        for fd, _ev in poller.poll(1000):
            chunk = os.read(fd, 4096)
            if not chunk:
                poller.unregister(fd)
                continue
            bufs[fd] += chunk
            if fd not in seen and GREETING in bufs[fd]:
                seen[fd] = time.perf_counter() - t0
                poller.unregister(fd)
    return sorted(seen.values())


def bench_density(k: int) -> None:
    from mocktainer.unikraft.bundle import plan

    with tempfile.TemporaryDirectory() as tmp:
        bundle, spec = tiny_bundle(tmp)
        root = os.path.join(tmp, "state")
        pipes = [os.pipe() for _ in range(k)]
        errors: list[str] = []

        def one(i: int) -> None:
            w = pipes[i][1]
            for argv in (["create", "--bundle", bundle, f"d{i}"], ["start", f"d{i}"]):
                r = subprocess.run([RUNU, "--root", root, *argv], stdin=subprocess.DEVNULL, stdout=w, stderr=w)
                if r.returncode:
                    errors.append(f"d{i}: {argv[0]} failed")
                    return

        t0 = time.perf_counter()
        seen: list[list[float]] = []  # read while the guests start, so each greeting is timed when it comes
        reader = threading.Thread(target=lambda: seen.append(_greetings([r for r, _ in pipes], t0)))
        reader.start()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for _, w in pipes:
            os.close(w)
        reader.join()
        if errors or not seen:
            raise SystemExit("; ".join(errors[:3]) or "the greetings did not all come")
        via_runu = seen[0]
        for i in range(k):
            subprocess.run([RUNU, "--root", root, "delete", "--force", f"d{i}"], stdin=subprocess.DEVNULL)
        for r, _ in pipes:
            os.close(r)
        system_reap()
        argv = plan(spec, os.path.join(bundle, "rootfs"), dict(os.environ), os.path.join(tmp, "direct")).args
        pipes = [os.pipe() for _ in range(k)]
        t0 = time.perf_counter()
        procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w) for _, w in pipes]
        for _, w in pipes:
            os.close(w)
        direct = _greetings([r for r, _ in pipes], t0)
        for p in procs:
            p.kill()
            p.wait()
        for r, _ in pipes:
            os.close(r)
    a, b = via_runu[-1] * 1000, direct[-1] * 1000
    print(f"\nDensity: {k} tiny guests (QEMU TCG) at once, ms until the last greeting (median greeting)")
    print(f"runu create+start {a:.0f} ({median_ms(via_runu) * 1000:.0f})   qemu direct {b:.0f} "
          f"({median_ms(direct) * 1000:.0f})   ratio {a / b:.2f}x")


def _cpu_of(argv: list[str], **kw) -> float:
    """CPU seconds (user + system) of one command, from the rusage of its reaped process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   **kw)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a live process itself (not its children), from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_cpu(n: int) -> None:
    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory() as tmp:
        bundle, sandbox = tiny_and_runc_bundles(tmp, sandbox_bundle)
        cli, sup, rc = [], [], []
        for i in range(n):
            root = os.path.join(tmp, "runu")
            cid = f"c{i}"
            t = _cpu_of([RUNU, "--root", root, "create", "--bundle", bundle, "--pid-file", f"{tmp}/pid", cid])
            pid = int(open(f"{tmp}/pid").read())
            t += _cpu_of([RUNU, "--root", root, "start", cid])
            sup.append(_proc_cpu(pid))
            t += _cpu_of([RUNU, "--root", root, "delete", "--force", cid])
            system_reap()
            cli.append(t)
            if runc:
                root = os.path.join(tmp, "runc")
                t = _cpu_of([runc, "--root", root, "create", "--bundle", sandbox, cid])
                t += _cpu_of([runc, "--root", root, "start", cid])
                t += _cpu_of([runc, "--root", root, "delete", "--force", cid])
                system_reap()
                rc.append(t)
    a, s = median_ms(cli) * 1000, median_ms(sup) * 1000
    print(f"\nCPU time of create + start + delete, {n} iterations, median ms")
    line = f"runu commands {a:.1f}   + its supervisor until deleted {s:.1f}"
    if rc:
        b = median_ms(rc) * 1000
        line += f"   runc {b:.1f}   ratio (commands) {a / b:.2f}x"
    print(line)


def _mem(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB of one process."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def bench_memory() -> None:
    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory() as tmp:
        bundle, _ = tiny_bundle(tmp)
        root = os.path.join(tmp, "runu")
        subprocess.run([RUNU, "--root", root, "create", "--bundle", bundle, "--pid-file", f"{tmp}/pid", "m"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        pid = int(open(f"{tmp}/pid").read())
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            vmm = int(f.read().split()[0])
        sup, qemu = _mem(pid), _mem(vmm)
        subprocess.run([RUNU, "--root", root, "delete", "--force", "m"], check=True)
        system_reap()
        print("\nMemory of a created container (KiB): RSS, PSS")
        print(f"runu supervisor {sup[0]}, {sup[1]}   paused QEMU (tiny guest, 64 MiB) {qemu[0]}, {qemu[1]}   "
              f"together {sup[0] + qemu[0]}, {sup[1] + qemu[1]}")
        if runc:
            sandbox = os.path.join(tmp, "sandbox")
            sandbox_bundle(sandbox)
            root = os.path.join(tmp, "runc")
            subprocess.run([runc, "--root", root, "create", "--bundle", sandbox, "--pid-file", f"{tmp}/rpid", "m"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            init = _mem(int(open(f"{tmp}/rpid").read()))
            subprocess.run([runc, "--root", root, "delete", "--force", "m"], check=True)
            system_reap()
            print(f"runc init (created) {init[0]}, {init[1]}")


def _interpreter() -> list[str]:
    """The interpreter (and its flags) of the runu launcher measured: its shebang line."""
    with open(shutil.which(RUNU) or RUNU, "rb") as f:
        line = f.readline()
    return line[2:].decode().split() if line.startswith(b"#!") else [sys.executable, "-I", "-S"]


def _qemu_prepared(argv: list[str]) -> tuple[float, float]:
    """QEMU started paused with a monitor on a socketpair, as runu's supervisor does it: (ms until the monitor
    answers qmp_capabilities, ms from `cont` to the greeting)."""
    import socket

    mine, theirs = socket.socketpair()
    r, w = os.pipe()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv + ["-S", "-chardev", f"socket,id=mon,fd={theirs.fileno()}", "-mon",
                                 "chardev=mon,mode=control"], stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                         pass_fds=[theirs.fileno()])
    os.close(w)
    theirs.close()
    replies = mine.makefile("rb")
    try:
        replies.readline()  # the greeting
        mine.sendall(b'{"execute": "qmp_capabilities"}\n')
        replies.readline()
        t1 = time.perf_counter()
        mine.sendall(b'{"execute": "cont"}\n')
        if not wait_for(r, GREETING, time.monotonic() + 30):
            raise SystemExit("no greeting from the prepared QEMU")
        t2 = time.perf_counter()
    finally:
        p.kill()
        p.wait()
        replies.close()
        mine.close()
        os.close(r)
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def _direct_greeting(argv: list[str]) -> float:
    r, w = os.pipe()
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w)
    os.close(w)
    ok = wait_for(r, GREETING, time.monotonic() + 30)
    ms = (time.perf_counter() - t) * 1000
    p.kill()
    p.wait()
    os.close(r)
    if not ok:
        raise SystemExit(f"no greeting from {argv[0]}")
    return ms


def _first_cgroup_move() -> float | None:
    """ms a write to cgroup.procs takes after a quiet spell: the kernel first waits for an RCU grace period
    (cgroup_threadgroup_rwsem), so every runtime waits this long before the container's process is in its
    cgroup and may run; None without a writable hierarchy."""
    base = next((b for b in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids", "/sys/fs/cgroup")
                 if os.access(os.path.join(b, "cgroup.procs"), os.W_OK)), None)
    if base is None:
        return None
    cg = os.path.join(base, f"runu-bench-floor-{os.getpid()}")
    os.mkdir(cg)
    child = subprocess.Popen(["sleep", "10"])
    try:
        time.sleep(0.2)  # quiet: no cgroup move for many grace periods
        t = time.perf_counter()
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(child.pid))
        return (time.perf_counter() - t) * 1000
    finally:
        child.kill()
        child.wait()
        for _ in range(100):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.01)


def bench_floors(n: int) -> None:
    from mocktainer.unikraft.host import kvm_usable

    interp = _interpreter() + ["-c", "import os"]
    runc = shutil.which("runc")
    fc = shutil.which("firecracker") and kvm_usable()
    with tempfile.TemporaryDirectory() as tmp:
        _, qemu_argv = _direct_argv(os.path.join(tmp, "qemu"))
        fc_argv = _direct_argv(os.path.join(tmp, "fc"), "firecracker")[1] if fc else []
        echo = os.path.join(tmp, "echo")
        echo_bundle(echo)
        py, ready, cont, direct, fcd, rs, move = [], [], [], [], [], [], []
        for i in range(n):
            g = _first_cgroup_move()
            if g is not None:
                move.append(g)
            t = time.perf_counter()
            subprocess.run(interp, check=True)
            py.append((time.perf_counter() - t) * 1000)
            a, b = _qemu_prepared(qemu_argv)
            ready.append(a)
            cont.append(b)
            direct.append(_direct_greeting(qemu_argv))
            if fc_argv:
                fcd.append(_direct_greeting(fc_argv))
            if runc:
                rs.append(_first_line_after_start(runc, os.path.join(tmp, "runc"), echo, f"f{i}", b"hello from runc"))
    P, R, C, D = median_ms(py), median_ms(ready), median_ms(cont), median_ms(direct)
    print(f"\nFloors (no runu code at all), {n} iterations, median ms")
    print(f"interpreter start-up with os ({' '.join(interp[:-2])}) {P:.1f}")
    print(f"QEMU -S until its monitor answers {R:.1f}   `cont` -> greeting {C:.1f}   QEMU direct -> greeting {D:.1f}")
    if rs:
        S = median_ms(rs)
        print(f"start -> first line: floor {P + C:.1f} (interpreter + cont->greeting) against runc start {S:.1f}:"
              f" {(P + C) / S:.2f}x before runu does anything (target 2x)")
    print(f"create+start (QEMU): floor {2 * P + R + C:.1f} (two interpreters + ready + cont->greeting) against"
          f" direct {D:.1f}: {(2 * P + R + C) / D:.2f}x (target 1.8x)")
    if fcd:
        F = median_ms(fcd)
        print(f"create+start (Firecracker): floor {2 * P + F:.1f} (two interpreters + Firecracker direct) against"
              f" direct {F:.1f}: {(2 * P + F) / F:.2f}x (target 2.5x)")
    print(f"create (QEMU): floor {P + R:.1f} (interpreter + ready)")
    if move:
        G = median_ms(move)
        print(f"first cgroup move after a quiet spell {G:.1f} (the kernel's RCU grace period; runc and crun wait for"
              f" it too): with it, create {P + G + R:.1f}, create+start {2 * P + G + R + C:.1f} = "
              f"{(2 * P + G + R + C) / D:.2f}x direct, when the VMM starts only once it is in its cgroup")


def main() -> None:
    global RUNU
    ap = argparse.ArgumentParser(description="runu vs runc/crun lifecycle, and unikernel boot through runu")
    ap.add_argument("-n", type=int, default=50, help="iterations (default 50)")
    ap.add_argument("--runu", default=RUNU, help="the runu to measure (default: runu on PATH)")
    ap.add_argument("--baseline", help="an older runu to put beside it in the unikernel lifecycle")
    ap.add_argument("--density", type=int, default=50, help="guests started at once (default 50)")
    ap.add_argument("--only", help="comma-separated parts: lifecycle,start,boot,unikernel,density,cpu,memory,floors")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    RUNU = opts.runu
    parts = set((opts.only or "lifecycle,start,boot,unikernel,density,cpu,memory,floors").split(","))
    system.set_child_subreaper()
    if "lifecycle" in parts:
        bench_lifecycle(opts.n)
    if "start" in parts:
        bench_start(max(10, opts.n // 2))
    if "boot" in parts:
        bench_boot(max(10, opts.n // 2), "qemu")
        from mocktainer.unikraft.host import kvm_usable

        if shutil.which("firecracker") and kvm_usable():
            bench_boot(max(10, opts.n // 2), "firecracker")
        else:
            print("\nFirecracker: not installed (bash scripts/setup-firecracker.sh) or /dev/kvm not usable; skipped")
    if "unikernel" in parts:
        bench_unikernel_lifecycle(max(10, opts.n // 2), opts.baseline)
    if "density" in parts:
        bench_density(opts.density)
    if "cpu" in parts:
        bench_cpu(max(10, opts.n // 2))
    if "memory" in parts:
        bench_memory()
    if "floors" in parts:
        bench_floors(max(10, opts.n // 2))


if __name__ == "__main__":
    main()
