"""A tiny CRI client: Python stubs generated from ``api.proto`` beside this file, and a typed wrapper.

The stubs are made with ``grpc_tools.protoc`` (the ``grpcio-tools`` test extra) the first time they are
needed, into ``<repo>/.cache/cri/<key>/`` where the key is a digest of the proto file and of the
grpcio-tools version, so editing the proto (or upgrading the tools) regenerates them and a stale copy is
never used.  A generation is written to a temporary directory and renamed into place, so concurrent test
runs never see half a directory.

Usage::

    with CriClient("/path/to/containerd.sock") as cri:
        pb = cri.pb                               # the message classes (runtime.v1)
        pod = cri.run_pod_sandbox(pb.PodSandboxConfig(...), runtime_handler="runu")
        ip = cri.pod_sandbox_status(pod).status.network.ip
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
PROTO = HERE / "api.proto"
TOP = HERE.parent.parent
CACHE = TOP / ".cache" / "cri"
MODULE = "cri_runtime_v1"
"""Base name of the generated modules (``<MODULE>_pb2``, ``<MODULE>_pb2_grpc``) and of the proto copy."""

DEFAULT_TIMEOUT = 60.0
"""Seconds any single CRI call may take."""


class StubsUnavailable(RuntimeError):
    """grpcio / grpcio-tools are not installed (``pip install -e .[test]``), or protoc failed."""


def _tools_version() -> str:
    try:
        from importlib.metadata import version
        return version("grpcio-tools")
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        return "unknown"


def generate(cache: Path = CACHE) -> Path:
    """The directory holding freshly generated (or cached, still current) stubs for ``api.proto``."""
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise StubsUnavailable(f"grpcio-tools is not installed ({e}): pip install -e '.[test]'") from e
    source = PROTO.read_bytes()
    key = hashlib.sha256(source + b"\0" + _tools_version().encode()).hexdigest()[:16]
    out = cache / key
    if (out / f"{MODULE}_pb2_grpc.py").is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache))
    try:
        (work / f"{MODULE}.proto").write_bytes(source)
        include = Path(protoc.__file__).resolve().parent / "_proto"  # the well-known types, unused today
        status = protoc.main(["grpc_tools.protoc", f"-I{work}", f"-I{include}", f"--python_out={work}",
                              f"--grpc_python_out={work}", str(work / f"{MODULE}.proto")])
        if status != 0:
            raise StubsUnavailable(f"grpc_tools.protoc failed on {PROTO} (status {status})")
        try:
            os.rename(work, out)
        except OSError:  # another run got there first: theirs is identical
            if not (out / f"{MODULE}_pb2_grpc.py").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for stale in cache.iterdir():  # older generations (other keys) are of no use any more
        if stale.is_dir() and stale.name != out.name and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return out


def load() -> tuple[ModuleType, ModuleType]:
    """(messages module, services module) of the generated stubs, imported once per process."""
    if f"{MODULE}_pb2_grpc" in sys.modules:
        return sys.modules[f"{MODULE}_pb2"], sys.modules[f"{MODULE}_pb2_grpc"]
    out = str(generate())
    sys.path.insert(0, out)  # the grpc module imports the messages module by its bare name
    try:
        pb = importlib.import_module(f"{MODULE}_pb2")
        services = importlib.import_module(f"{MODULE}_pb2_grpc")
    finally:
        sys.path.remove(out)
    return pb, services


class CriClient:
    """runtime.v1 RuntimeService and ImageService over a containerd socket (``unix://`` is added).

    Every method takes an optional ``timeout`` (seconds, default :data:`DEFAULT_TIMEOUT`); a failing
    call raises ``grpc.RpcError`` (``.code()``, ``.details()``).
    """

    def __init__(self, address: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT):
        import grpc

        self.pb, services = load()
        target = os.fspath(address)
        if "://" not in target:
            target = "unix://" + target
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target)
        self.runtime = services.RuntimeServiceStub(self.channel)
        self.images = services.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    # -- runtime ----------------------------------------------------------------------------------------------

    def version(self, *, timeout: float | None = None) -> Any:
        """VersionResponse (``runtime_name``, ``runtime_version``, ``runtime_api_version``)."""
        return self.runtime.Version(self.pb.VersionRequest(version="v1"), timeout=self._t(timeout))

    def run_pod_sandbox(self, config: Any, runtime_handler: str = "", *, timeout: float | None = None) -> str:
        """Create and start a pod sandbox from a PodSandboxConfig; return its id."""
        req = self.pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        return self.runtime.RunPodSandbox(req, timeout=self._t(timeout)).pod_sandbox_id

    def pod_sandbox_status(self, pod_id: str, *, verbose: bool = False, timeout: float | None = None) -> Any:
        """PodSandboxStatusResponse (``status.network.ip``, ``status.state``; ``info`` when verbose)."""
        req = self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose)
        return self.runtime.PodSandboxStatus(req, timeout=self._t(timeout))

    def list_pod_sandboxes(self, *, timeout: float | None = None) -> list[Any]:
        return list(self.runtime.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=self._t(timeout)).items)

    def stop_pod_sandbox(self, pod_id: str, *, timeout: float | None = None) -> None:
        self.runtime.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=self._t(timeout))

    def remove_pod_sandbox(self, pod_id: str, *, timeout: float | None = None) -> None:
        self.runtime.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                      timeout=self._t(timeout))

    def create_container(self, pod_id: str, config: Any, sandbox_config: Any, *,
                         timeout: float | None = None) -> str:
        """Create a container (ContainerConfig) in a pod (its PodSandboxConfig again); return its id."""
        req = self.pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox_config)
        return self.runtime.CreateContainer(req, timeout=self._t(timeout)).container_id

    def start_container(self, container_id: str, *, timeout: float | None = None) -> None:
        self.runtime.StartContainer(self.pb.StartContainerRequest(container_id=container_id),
                                    timeout=self._t(timeout))

    def stop_container(self, container_id: str, grace: int = 10, *, timeout: float | None = None) -> None:
        """StopContainer: the stop signal (SIGTERM), then SIGKILL after ``grace`` seconds."""
        req = self.pb.StopContainerRequest(container_id=container_id, timeout=grace)
        self.runtime.StopContainer(req, timeout=self._t(timeout) + grace)

    def remove_container(self, container_id: str, *, timeout: float | None = None) -> None:
        self.runtime.RemoveContainer(self.pb.RemoveContainerRequest(container_id=container_id),
                                     timeout=self._t(timeout))

    def container_status(self, container_id: str, *, verbose: bool = False, timeout: float | None = None) -> Any:
        """ContainerStatusResponse (``status.state``, ``status.exit_code``, ``status.log_path``, ...)."""
        req = self.pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return self.runtime.ContainerStatus(req, timeout=self._t(timeout))

    def list_containers(self, pod_id: str = "", *, timeout: float | None = None) -> list[Any]:
        req = self.pb.ListContainersRequest(filter=self.pb.ContainerFilter(pod_sandbox_id=pod_id))
        return list(self.runtime.ListContainers(req, timeout=self._t(timeout)).containers)

    def exec_sync(self, container_id: str, cmd: list[str], exec_timeout: int = 0, *,
                  timeout: float | None = None) -> Any:
        """ExecSync: run ``cmd`` in a running container (``runtime exec``) and wait; ExecSyncResponse
        (``stdout``, ``stderr`` as bytes, ``exit_code``).  ``exec_timeout``: seconds the CRI lets it run."""
        req = self.pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=exec_timeout)
        return self.runtime.ExecSync(req, timeout=self._t(timeout) + exec_timeout)

    # -- images -----------------------------------------------------------------------------------------------

    def image_status(self, ref: str, *, timeout: float | None = None) -> Any | None:
        """The CRI's Image for ``ref`` (``id``, ``repo_tags``, ``size``), or None when it does not know it."""
        req = self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=ref))
        resp = self.images.ImageStatus(req, timeout=self._t(timeout))
        return resp.image if resp.HasField("image") else None
