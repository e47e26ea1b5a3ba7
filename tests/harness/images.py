"""OCI images built offline (busybox and unikernel rootfs, umoci) for containerd and podman."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .containerd import Containerd
from .procs import DEFAULT_TIMEOUT, HarnessError, missing_binaries, run_cmd

# ---------------------------------------------------------------------------------------------
# images


def normalize_ref(ref: str) -> str:
    """``name`` -> ``localhost/name:latest``; keeps a registry host and an explicit tag/digest.

    The same string then works for ctr (which does no normalisation) and podman.
    """
    if "@" not in ref:
        last = ref.rsplit("/", 1)[-1]
        if ":" not in last:
            ref += ":latest"
    first = ref.split("/", 1)[0]
    if "/" not in ref or not ("." in first or ":" in first or first == "localhost"):
        ref = "localhost/" + ref
    return ref


def _split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` of a normalised ref -> (repo, tag)."""
    if "@" in ref:
        raise ValueError(f"digest references cannot be built: {ref!r}")
    repo, tag = ref.rsplit(":", 1)
    if "/" in tag:
        raise ValueError(f"reference has no tag: {ref!r}")
    return repo, tag


def busybox_rootfs(dest: str | os.PathLike,
                   applets: Iterable[str] = ("sh", "echo", "sleep", "cat", "true", "false", "ls",
                                             "ps", "env", "hostname", "id", "uname", "printf")
                   ) -> Path:
    """A minimal rootfs with the static ``/bin/busybox`` (Debian busybox-static) plus applet links.

    Also creates the empty directories runtimes like to mount on (proc, dev, sys, tmp, etc).
    """
    busybox = shutil.which("busybox")
    if busybox is None:
        raise HarnessError("busybox not installed (apt-get install busybox-static)")
    out = run_cmd(["file", "-L", busybox], timeout=10) if shutil.which("file") else None
    if out is not None and "statically linked" not in out.stdout:
        raise HarnessError(f"{busybox} is not static; install busybox-static")
    dest = Path(dest)
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    for applet in applets:
        link = dest / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")
    return dest


def unikraft_rootfs(dest: str | os.PathLike, kernel: bytes | str | os.PathLike,
                    initrd: bytes | str | os.PathLike | None = None) -> Path:
    """A rootfs holding ``unikraft/bin/kernel`` (and ``unikraft/bin/initrd``) as regular files."""
    dest = Path(dest)
    bindir = dest / "unikraft" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, src in (("kernel", kernel), ("initrd", initrd)):
        if src is None:
            continue
        if isinstance(src, bytes):
            (bindir / name).write_bytes(src)
        else:
            shutil.copyfile(src, bindir / name)
        (bindir / name).chmod(0o644)
    return dest


KEEP = object()
"""`unikernel_bundle(resources=KEEP)`: keep the resources `runu spec` writes."""


def unikernel_bundle(dest: str | os.PathLike, kernel: bytes | str | os.PathLike, args: Sequence[str] = (), *,
                     initrd: bytes | str | os.PathLike | None = None, env: Sequence[str] = (),
                     annotations: Mapping[str, str] | None = None, resources: Any = KEEP,
                     netns: str | None = None) -> str:
    """A unikernel bundle at ``dest``: ``runu spec``'s config.json with ``process.args`` the entrypoint plus
    ``args`` and ``process.env`` exactly ``env`` (empty by default, so that mode words such as ``idle`` stay
    the kernel's and are not followed by environment variables); ``netns`` joins that network namespace
    instead of making one."""
    from mocktainer.runtime import spec_template

    dest = Path(dest)
    unikraft_rootfs(dest / "rootfs", kernel, initrd)
    cfg = spec_template(list(args))
    cfg["process"]["env"] = list(env)
    cfg["annotations"] = dict(annotations or {})
    if resources is not KEEP:
        cfg["linux"]["resources"] = dict(resources or {})
    if netns:
        cfg["linux"]["namespaces"] = [{"type": "network", "path": netns}]
    (dest / "config.json").write_text(json.dumps(cfg))
    return str(dest)


def build_image(rootfs_dir: str | os.PathLike, ref: str, *,
                entrypoint: Sequence[str] | None = None, cmd: Sequence[str] | None = None,
                env: Sequence[str] | Mapping[str, str] | None = ("PATH=/bin:/usr/bin:/sbin:/usr/sbin",),
                workdir: str | None = None,
                annotations: Mapping[str, str] | None = None,
                labels: Mapping[str, str] | None = None,
                dest: str | os.PathLike | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Build a single-layer OCI image archive (tar of an OCI layout) from a directory, offline.

    Uses ``umoci init/new/unpack``, copies the directory into the unpacked bundle, then ``umoci
    repack/config/gc`` (not ``umoci insert``: umoci 0.4.7 writes that layer without the tar
    padding and end-of-archive blocks).  The manifest in the layout is named with the full
    normalised ``ref`` (``org.opencontainers.image.ref.name``), which both ``ctr image import
    --base-name`` and ``podman load`` keep as the image name.  ``annotations`` go to the image
    manifest, ``labels`` to the image config.  ``dest`` defaults to ``<rootfs_dir>.oci.tar``.
    Returns the path of the tar.
    """
    if missing_binaries("umoci"):
        raise HarnessError("umoci not installed")
    rootfs_dir = Path(rootfs_dir).resolve()
    if not rootfs_dir.is_dir():
        raise HarnessError(f"not a directory: {rootfs_dir}")
    ref = normalize_ref(ref)
    dest = Path(dest) if dest is not None else rootfs_dir.with_name(rootfs_dir.name + ".oci.tar")
    work = Path(tempfile.mkdtemp(prefix="mocktainer-image-"))
    try:
        layout = work / "layout"
        image = f"{layout}:{ref}"
        umoci = lambda *a: run_cmd(["umoci", *a], timeout=timeout, check=True)  # noqa: E731
        bundle = work / "bundle"
        umoci("init", "--layout", str(layout))
        umoci("new", "--image", image)
        umoci("unpack", "--image", image, str(bundle))
        # cp -a keeps owners, modes, hard links, device nodes and fifos (copytree would block on a fifo)
        run_cmd(["cp", "-a", f"{rootfs_dir}/.", str(bundle / "rootfs")], timeout=timeout, check=True)
        umoci("repack", "--image", image, "--history.created_by", "mocktainer tests/clients.py",
              str(bundle))
        args = ["config", "--image", image, "--no-history"]
        if entrypoint is not None:
            args += ["--clear=config.entrypoint"]
            args += [f"--config.entrypoint={a}" for a in entrypoint]
        if cmd is not None:
            args += ["--clear=config.cmd"]
            args += [f"--config.cmd={a}" for a in cmd]
        if env:
            items = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env)
            args += [f"--config.env={e}" for e in items]
        if workdir:
            args += [f"--config.workingdir={workdir}"]
        for k, v in (labels or {}).items():
            args += [f"--config.label={k}={v}"]
        for k, v in (annotations or {}).items():
            args += [f"--manifest.annotation={k}={v}"]
        umoci(*args)
        umoci("gc", "--layout", str(layout))
        tmp_dest = dest.with_name(dest.name + ".part")
        with tarfile.open(tmp_dest, "w") as tar:
            for entry in sorted(os.listdir(layout)):
                tar.add(layout / entry, arcname=entry)
        os.replace(tmp_dest, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def import_image(containerd: "Containerd", tar: str | os.PathLike, ref: str, *,
                 timeout: float = DEFAULT_TIMEOUT, namespace: str | None = None) -> str:
    """``ctr image import`` an archive made by :func:`build_image`; return the image name in containerd.

    ``namespace`` is the containerd namespace to import into (default: the instance's own); the CRI
    plugin only sees images in :data:`CRI_NAMESPACE`.
    """
    ref = normalize_ref(ref)
    repo, _tag = _split_ref(ref)
    containerd.ctr("image", "import", "--base-name", repo, os.fspath(tar), namespace=namespace,
                   timeout=timeout, check=True)
    names = containerd.ctr("image", "ls", "-q", namespace=namespace, timeout=timeout, check=True).stdout.split()
    if ref not in names:
        raise HarnessError(f"import of {tar} did not create {ref}; images: {names}")
    return ref
