"""Fuzz-style: mutated config.json files (fields deleted, given the wrong type or garbage, the text truncated) fed
to `runu create` then `runu delete --force`. Each create either succeeds or fails with exit 1 and exactly one
`runu: ` line on stderr (never a Python traceback), and afterwards nothing is left: no state directory under
--root, no process, no cgroup directory.

The mutations come from a seeded random generator, so a failing case is reproducible from its number.
"""

import copy
import json
import os
import random
import shutil
import subprocess
import uuid

import pytest

from conftest import needs_root
from harness.fs import cgroups_below, remove_cgroups
from harness.runu import Runtime, spec, write_bundle

from runu.delegate import is_unikernel

from guest.build import build_tiny

pytestmark = [needs_root, pytest.mark.integration]

CASES = 100
SEED = 0x6F757A7A

GARBAGE = [None, True, False, 0, -1, 1.5, 2**64, "", "x", "\u00e9\u2603", "../../etc", "/nonexistent", [], [None],
           [1, "a"], {}, {"a": 1}, {"path": 3}, "a" * 5000]


# What a bad config.json may raise: mocktainer's errors, runu's usage errors, OS errors naming a file.
EXPECTED_ERRORS = {"ConfigError", "UsageError", "InvalidIDError", "FileNotFoundError", "NotADirectoryError",
                   "PermissionError", "IsADirectoryError", "JSONDecodeError", "SpecError", "HookError",
                   "ProcessError", "SystemError_", "ExistsError"}


def _exception_kind(err: str) -> str:
    """The class name of the last traceback's exception in a --debug stderr ("" when there is none)."""
    lines = err.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback"):
            for line in lines[i + 1:]:
                if line and not line.startswith(" ") and ":" in line:
                    return line.split(":", 1)[0].rsplit(".", 1)[-1]
            return "?"
    return ""


@pytest.mark.parametrize("bad", [["network"], {"a": 1}])
def test_namespace_type_of_the_wrong_type_is_a_clear_error(tmp_path, bad):
    rt = Runtime("runu-library", str(tmp_path))  # the library's spec conversion (runu hands plain bundles to crun)
    cfg = spec()
    cfg["linux"]["namespaces"] = [{"type": bad}]
    b = write_bundle(str(tmp_path / "b"), cfg)
    try:
        dbg = rt("--debug", "create", "--bundle", b, "c1", timeout=30)
        assert dbg.rc == 1 and _exception_kind(dbg.err) == "ConfigError", dbg
    finally:
        rt.cleanup()


def _paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _mutate(rng: random.Random, config: dict) -> tuple[str, bytes]:
    """One mutation: (description, config.json bytes)."""
    text = json.dumps(config, indent=1)
    roll = rng.random()
    if roll < 0.12:
        cut = rng.randrange(len(text))
        return f"truncated at {cut}", text[:cut].encode()
    c = copy.deepcopy(config)
    paths = [p for p in _paths(c) if p]
    n = 1 if roll < 0.8 else rng.randint(2, 4)
    what = []
    for _ in range(n):
        path = rng.choice(paths)
        parent = c
        try:
            for k in path[:-1]:
                parent = parent[k]
            old = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        op = rng.choice(["delete", "garbage", "garbage", "type"])
        if op == "delete":
            del parent[path[-1]]
        elif op == "garbage":
            parent[path[-1]] = copy.deepcopy(rng.choice(GARBAGE))
        else:  # the same value under another JSON type
            parent[path[-1]] = ([old] if not isinstance(old, list) else {"0": old}) if rng.random() < 0.5 \
                else json.dumps(old)
        what.append(f"{op} {'.'.join(map(str, path))}")
    return "; ".join(what), json.dumps(c).encode()


@pytest.fixture
def cg_top():
    """A cgroup directory unique to this test that the fuzzed containers are placed below; removed from
    every hierarchy afterwards, even when the test fails."""
    top = f"/mtfz-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield top
    finally:
        left = remove_cgroups(top, kill=True)
        assert not left, f"cgroups still in use: {left}"


def _cgroup_dirs(top: str) -> list[str]:
    """The cgroups below `top` (the containers') in every mounted hierarchy: a create that failed, or a delete,
    must leave none in any of them, whichever it joined."""
    return [d for d in cgroups_below(top) if not d.endswith(top)]


def _unikernel_base(rt: Runtime, tmp) -> tuple[dict, str]:
    """runu spec's config.json with every unikernel knob set, and the tiny kernel."""
    kernel = build_tiny(str(tmp), "pvh")
    b = str(tmp / "spec")
    os.makedirs(b)
    subprocess.run([rt.binary, "spec", "--bundle", b], check=True)
    with open(os.path.join(b, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"]["args"] = ["/unikraft/bin/kernel", "idle", "--", "a"]
    cfg["process"]["env"] = ["A=b"]
    cfg["annotations"] = {"org.unikraft.runu.accel": "tcg", "org.unikraft.runu.vmm": "qemu",
                          "org.unikraft.runu.machine": "microvm", "org.unikraft.runu.qemu.cpu": "max",
                          "org.unikraft.runu.qemu.extra-args": json.dumps(["-rtc", "base=utc"])}
    cfg["linux"]["resources"] = {"memory": {"limit": 160 * 1024 * 1024}}
    return cfg, kernel


@pytest.mark.parametrize("kind", ["sandbox", "unikernel"])
def test_mutated_configs_give_a_clear_error_or_success_and_leave_nothing(tmp_path, cg_top, kind):
    # plain bundles: the library's own path (the runu binary hands them to the delegate OCI runtime)
    rt = Runtime("runu-library" if kind == "sandbox" else "runu", str(tmp_path))
    rng = random.Random(SEED)
    if kind == "sandbox":
        base, kernel = spec(), None
        base["hooks"] = {"createRuntime": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    else:
        if shutil.which("qemu-system-x86_64") is None:
            pytest.skip("qemu-system-x86 is not installed")
        base, kernel = _unikernel_base(rt, tmp_path)
    base["linux"]["cgroupsPath"] = cg_top + "/c"
    outcomes = {"ok": 0, "error": 0}
    unexpected: list[str] = []
    try:
        for i in range(CASES):
            what, data = _mutate(rng, base)
            b = write_bundle(str(tmp_path / f"b{i}"), data, rootfs=kernel is None)
            if kernel:
                os.makedirs(os.path.join(b, "rootfs", "unikraft", "bin"))
                shutil.copy(kernel, os.path.join(b, "rootfs", "unikraft", "bin", "kernel"))
            cid = f"fz{i}"
            r = rt("create", "--bundle", b, "--pid-file", os.path.join(b, "init.pid"), cid, timeout=30)
            case = f"case {i} ({what}): {r!r}"
            assert "Traceback" not in r.err, case
            if r.rc == 0:
                outcomes["ok"] += 1
            elif kernel and is_unikernel(b) is False:
                # root.path now names a directory without the kernel: runu handed the bundle to its delegate
                # OCI runtime (runu/delegate.py), whose own words say what is wrong
                outcomes["error"] += 1
                assert r.err.strip() and cid not in rt.ids(), case
            else:
                outcomes["error"] += 1
                lines = r.err.splitlines()
                assert r.rc == 1 and len(lines) == 1 and lines[0].startswith("runu: "), case
                assert cid not in rt.ids(), case
                # the same create under --debug shows which exception it was: one runu means to raise
                dbg = rt("--debug", "create", "--bundle", b, cid, timeout=30)
                kind = _exception_kind(dbg.err)
                if kind not in EXPECTED_ERRORS:
                    unexpected.append(f"{case}\n{dbg.err}")
                assert cid not in rt.ids(), case
            d = rt("delete", "--force", cid, timeout=30)
            assert "Traceback" not in d.err, case
            assert rt.ids() == [], case
            assert rt.new_processes() == [], case
            assert _cgroup_dirs(cg_top) == [], case
    finally:
        rt.cleanup()
    # the mutations must not all be caught by the JSON parser or all be harmless
    print(outcomes)
    assert not unexpected, "\n\n".join(unexpected)
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 20, outcomes
