"""runu under Kubernetes' CRI: a pod through containerd's CRI plugin, with a CNI network, and a Linux guest in it.

What a kubelet does, through a CRI client generated from ``tests/cri/api.proto`` (crictl is not in Debian):

- a private containerd (``tests/clients.py``) with the CRI plugin, runu as the runtime handler ``runu``, a
  pause image built here from busybox-static as its ``sandbox_image`` (nothing is pulled), and
  ``pod_annotations``/``container_annotations`` letting ``org.unikraft.runu.*`` through: the pod carries
  ``org.unikraft.runu.accel=tcg`` (Linux guests crash under this host's paravirtual KVM);
- containerd runs in a network namespace of the test's own, and the CNI configuration (Debian's
  containernetworking-plugins: ``bridge`` with ``host-local`` IPAM on a private /24) puts the bridge and the
  host ends of the pods' veths there: no traffic leaves that namespace, and the host's network is untouched;
- RunPodSandbox (runu's delegate OCI runtime runs the pause process as a real container, in the pod netns
  CNI configured), CreateContainer and StartContainer of an image whose rootfs is the Linux test guest as a
  unikernel bundle (``unikraft/bin/kernel`` + ``unikraft/bin/initrd``): runu hands the pod's address to the
  guest (macvtap on the pod's eth0), the guest's console is the CRI container log, it pings the pod's
  gateway, and the gateway's namespace pings the pod IP, which the guest answers;
- StopContainer (SIGTERM: the guest powers off through the ACPI power button), RemoveContainer (the pod's
  eth0 gets its address back), StopPodSandbox, RemovePodSandbox; then nothing is left: no CRI object, state
  of runu or its delegate, QEMU, shim, macvtap, tap node, CNI netns, CNI cache or IPAM entry, mount, cgroup or
  namespace;
- a pod with the guest and a busybox sidecar (run by the delegate): ExecSync into the sidecar, and what the
  sidecar reaches of the guest over the network, measured (docs/clients.md, the pod model).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import RUNU, needs_root

import clients
from guest import linux

POD_DNS, POD_SEARCH = "10.96.0.10", "default.svc.cluster.local"
HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.integration, pytest.mark.clients]

BUSYBOX = "/bin/busybox"
CNI_BIN = Path("/usr/lib/cni")
CNI_STATE = Path("/var/lib/cni")
NETNS_DIR = Path("/run/netns")
M = linux.MARKER
HANDLER = "runu"
ANNOTATIONS = {"org.unikraft.runu.accel": "tcg"}  # Linux guests crash under this host's paravirtual KVM
GUEST_MIB = 128
QEMU_OVERHEAD_MIB = 72  # runu keeps this much of the memory limit for QEMU and its supervisor (docs/bundles.md)
PAUSE_REF = "localhost/runu-tests/pause:latest"
APP_REF = "localhost/runu-tests/linux-guest:latest"
SIDECAR_REF = "localhost/runu-tests/sidecar:latest"
HTTP_PORT = 8080  # the guest's `serve=` word: busybox httpd in the guest
BOOT_TIMEOUT = 90.0

REQUIRED = ("containerd", "ctr", "containerd-shim-runc-v2", "umoci", "qemu-system-x86_64", "nsenter", "ip",
            BUSYBOX, *(str(CNI_BIN / p) for p in ("bridge", "host-local", "loopback")))


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def links(netns_path: str) -> list[str]:
    """Interface names in the network namespace at ``netns_path``."""
    out = subprocess.run(["nsenter", f"--net={netns_path}", "ip", "-j", "link", "show"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return sorted(link["ifname"] for link in json.loads(out))


def ipv4_addrs(netns_path: str, dev: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net={netns_path}", "ip", "-j", "-4", "addr", "show", "dev", dev],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return [f"{a['local']}/{a['prefixlen']}" for i in json.loads(out) for a in i.get("addr_info", [])]


def cri_log_text(path: Path) -> str:
    """The text of a CRI container log (``<RFC 3339 time> <stream> <P|F> <text>`` lines), partial lines joined."""
    try:
        raw = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    out = []
    for line in raw.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else ""
        out.append(text if parts[2] == "P" else text + "\n")
    return "".join(out)


# -- images ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """{ref: OCI archive}: the pause image (busybox sleeping), the Linux test guest as a unikernel bundle, and a
    busybox sidecar (a shell that sleeps until SIGTERM, with the network applets a sidecar would use)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (containerd, network namespaces)")
    clients.require(*REQUIRED)
    try:
        from cri.client import StubsUnavailable, load
        load()
    except (ImportError, StubsUnavailable) as e:
        pytest.skip(f"no CRI client: {e} (pip install -e '.[test]' installs grpcio and grpcio-tools)")
    tmp = tmp_path_factory.mktemp("cri-images")
    try:
        kernel, initrd = linux.build_linux_guest(str(tmp / "guest"))
    except linux.GuestMissing as e:
        pytest.skip(f"Linux test guest unavailable: {e}")
    pause = clients.busybox_rootfs(tmp / "pause-rootfs", applets=("sh", "sleep"))
    app = clients.unikraft_rootfs(tmp / "app-rootfs", kernel, initrd)
    sidecar = clients.busybox_rootfs(tmp / "sidecar-rootfs", applets=("sh", "sleep", "echo", "cat", "hostname",
                                                                      "printf", "ip", "ping", "nc"))
    return {
        PAUSE_REF: clients.build_image(pause, PAUSE_REF, entrypoint=["/bin/busybox", "sleep"],
                                       cmd=["2147483647"], dest=tmp / "pause.oci.tar"),
        # kraftkit's layout: the entrypoint names the kernel, Cmd holds the guest's arguments (the pod's
        # container config replaces them with its own `args`)
        APP_REF: clients.build_image(app, APP_REF, entrypoint=["/unikraft/bin/kernel"], cmd=["quiet", "idle"],
                                     env=(), dest=tmp / "app.oci.tar"),
        # PID 1 ignores signals it has no handler for: the trap makes StopContainer's SIGTERM end it
        SIDECAR_REF: clients.build_image(sidecar, SIDECAR_REF, entrypoint=["/bin/sh", "-c"],
                                         cmd=["trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"],
                                         dest=tmp / "sidecar.oci.tar"),
    }


# -- the node: containerd with CRI in a network namespace of its own ----------------------------------------------

class Node:
    """Everything one test run creates, and its removal: a network namespace, a CNI network (bridge +
    host-local) in it, a private containerd with CRI started inside it, the CRI client, and the CRI pods."""

    def __init__(self, tmp: Path):
        tag = secrets.token_hex(3)
        self.netns = f"mt-cri-{tag}"
        self.network = f"mt-cri-{tag}"  # the CNI network: names the IPAM directory and the result cache files
        self.bridge = f"mtbr{tag}"
        self.subnet = f"10.{100 + secrets.randbelow(100)}.{secrets.randbelow(256)}"  # only inside our netns
        self.gateway = f"{self.subnet}.1"
        self.cgroup_parent = f"/mt-cri-{tag}"
        self.ipam_dir = tmp / "ipam"
        self.log_dir = tmp / "pods"
        self.netns_before = self.cni_netns()
        self.cni_state_existed = CNI_STATE.exists()
        self.pods: list[str] = []
        self.containerd: clients.Containerd | None = None
        self.cri: Any = None

    @staticmethod
    def cni_netns() -> set[str]:
        """The pod network namespaces containerd's CRI pins in /run/netns (``cni-<uuid>``)."""
        return {p.name for p in NETNS_DIR.glob("cni-*")} if NETNS_DIR.is_dir() else set()

    def conflist(self) -> dict:
        return {
            "cniVersion": "0.4.0",
            "name": self.network,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": f"{self.subnet}.0/24", "gateway": self.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(self.ipam_dir),
                },
            }],
        }

    def start(self) -> None:
        from cri.client import CriClient

        ip("netns", "add", self.netns)
        ip("-n", self.netns, "link", "set", "lo", "up")  # the CRI stream server listens on 127.0.0.1
        self.containerd = clients.Containerd(runtimes={HANDLER: RUNU}, cri=True, sandbox_image=PAUSE_REF,
                                             runtime_annotations=["org.unikraft.runu.*"], netns=self.netns)
        self.containerd.write_cni_conflist(self.conflist())
        self.containerd.start()
        self.cri = CriClient(self.containerd.address)

    @property
    def runu_root(self) -> Path:
        """runu's --root under the CRI: the shim appends the containerd namespace to the runtime's Root."""
        assert self.containerd is not None
        return self.containerd.runtime_root / clients.CRI_NAMESPACE

    def import_images(self, images: dict[str, Path]) -> None:
        assert self.containerd is not None
        for ref, tar in images.items():
            clients.import_image(self.containerd, tar, ref, namespace=clients.CRI_NAMESPACE)
        # the CRI plugin learns about images from containerd's events: wait until it knows both
        clients.eventually("images the CRI does not know",
                           lambda: [r for r in images if self.cri.image_status(r) is None], timeout=15)

    def pod_config(self, name: str, annotations: dict[str, str]) -> Any:
        pb = self.cri.pb
        uid = secrets.token_hex(8)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=0),
            hostname=name,
            # CRI writes the pod's resolv.conf from this and bind-mounts it into the containers: runu hands
            # the name server and search domain to the guest in netdev.ip
            dns_config=pb.DNSConfig(servers=[POD_DNS], searches=[POD_SEARCH]),
            log_directory=str(self.log_dir / f"default_{name}_{uid}"),
            annotations=annotations,
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self.cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))),
        )

    def run_pod(self, config: Any) -> str:
        pod = self.cri.run_pod_sandbox(config, runtime_handler=HANDLER)
        self.pods.append(pod)
        return pod

    def teardown(self) -> list[str]:
        """Remove everything, whatever state the test left; return what could not be removed."""
        problems: list[str] = []
        if self.cri is not None:
            for pod in self.pods:
                for step in (self.cri.stop_pod_sandbox, self.cri.remove_pod_sandbox):
                    try:
                        step(pod, timeout=60)
                    except Exception as e:  # noqa: BLE001 - report, carry on removing
                        problems.append(f"{step.__name__}({pod[:12]}): {e}")
            self.cri.close()
            self.cri = None
        if self.containerd is not None:
            try:
                self.containerd.stop()
            except clients.HarnessError as e:
                problems.append(str(e))
        left = clients.remove_cgroups(self.cgroup_parent)
        if left:
            problems.append(f"cgroups in use: {left}")
        if (NETNS_DIR / self.netns).exists():
            subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, timeout=30)
        # containerd pins pod namespaces in /run/netns; a failed run may leave ours behind
        for name in self.cni_netns() - self.netns_before:
            subprocess.run(["umount", "-l", str(NETNS_DIR / name)], capture_output=True, timeout=30)
            with contextlib.suppress(OSError):
                os.unlink(NETNS_DIR / name)
            problems.append(f"pod netns {name} left behind")
        problems += [f"CNI state left: {p}" for p in self.remove_cni_state()]
        clients.reap_zombies()
        return problems

    def cni_leftovers(self, pods: Iterable[str] = ()) -> list[Path]:
        """libcni's cached results of our network (and of the loopback network of ``pods``), and host-local's
        address allocations in it (one file per address; its lock and ``last_reserved_ip.0`` stay)."""
        found = []
        results = CNI_STATE / "results"
        if results.is_dir():
            found += [p for p in results.iterdir()
                      if p.name.startswith(f"{self.network}-") or any(pod in p.name for pod in pods)]
        if (CNI_STATE / "networks" / self.network).exists():  # the default dataDir: ours is private
            found.append(CNI_STATE / "networks" / self.network)
        allocations = self.ipam_dir / self.network
        if allocations.is_dir():
            found += [p for p in allocations.iterdir() if p.name.startswith(self.subnet + ".")]
        return found

    def remove_cni_state(self) -> list[Path]:
        left = self.cni_leftovers(self.pods)
        for p in left:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
        shutil.rmtree(self.ipam_dir, ignore_errors=True)
        if not self.cni_state_existed:  # made for this run: remove the (now empty) directories again
            for d in (CNI_STATE / "results", CNI_STATE / "networks", CNI_STATE):
                with contextlib.suppress(OSError):
                    d.rmdir()
        return left


@pytest.fixture
def node(tmp_path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        problems = n.teardown()
    assert problems == [], problems


def assert_delegated(node: Node, cid: str, pid: int) -> None:
    """``cid`` (process ``pid``) is a real container run by runu's delegate OCI runtime (the pod model in
    docs/clients.md): its state is the delegate's, under runu's root; the process is PID 1 of a PID namespace
    of its own, in a mount namespace of its own whose root is the image's (busybox-static, no ``/usr``), and
    without the capabilities of the host's root (CAP_SYS_ADMIN)."""
    assert (node.runu_root / "@delegate" / cid).is_dir() and not (node.runu_root / cid).exists()
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["NSpid"].split() == [str(pid), "1"], status["NSpid"]
    for ns in ("pid", "mnt"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    root = Path(f"/proc/{pid}/root")
    assert (root / "bin" / "busybox").is_file() and not (root / "usr").exists()
    assert not int(status["CapEff"], 16) & (1 << 21), status["CapEff"]  # CAP_SYS_ADMIN


def guest_config(pb: Any, args: list[str], name: str = "guest") -> Any:
    """The CRI config of the Linux test guest as a pod's container: ``args`` are its kernel command line words,
    its console is ``<name>/0.log`` in the pod's log directory, its memory limit sizes the VM."""
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=APP_REF),
        args=args,
        log_path=f"{name}/0.log",
        linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
            memory_limit_in_bytes=(GUEST_MIB + QEMU_OVERHEAD_MIB) << 20)),
    )


def wait_for_guest(node: Node, cid: str, log: Path) -> str:
    """The guest's console once it says "idle" (it is up, its network configured); fails the test with the
    console and containerd's log when the container stops first or the boot takes too long."""
    cri, pb, cd = node.cri, node.cri.pb, node.containerd
    assert cd is not None
    deadline = time.monotonic() + BOOT_TIMEOUT
    while M + "idle" not in (console := cri_log_text(log)):
        st = cri.container_status(cid).status
        if st.state != pb.CONTAINER_RUNNING or time.monotonic() > deadline:
            pytest.fail(f"the guest did not come up (state {pb.ContainerState.Name(st.state)}, "
                        f"exit {st.exit_code}):\n{console[-4000:]}\n--- containerd ---\n{cd.log_tail()}")
        time.sleep(0.2)
    return console


def assert_pod_gone(node: Node, pod: str, pids: Iterable[int]) -> None:
    """StopPodSandbox and RemovePodSandbox of ``pod`` leave nothing of it: no CRI object, no process of
    ``pids``, no pinned netns, no state of runu or its delegate, no CNI cache, IPAM entry or host veth."""
    cri = node.cri
    cri.stop_pod_sandbox(pod)
    cri.remove_pod_sandbox(pod)
    node.pods.remove(pod)
    assert cri.list_pod_sandboxes() == []
    allocations = node.ipam_dir / node.network
    assert sorted(p.name for p in allocations.iterdir()) == ["last_reserved_ip.0", "lock"]  # the address went back
    for pid in pids:
        assert (st := clients._read_stat(pid)) is None or st[0] in "ZX", (pid, st)  # the pod's processes went
    clients.eventually("pod netns left in /run/netns", lambda: node.cni_netns() - node.netns_before, timeout=15)
    clients.eventually(f"runtime state left in {node.runu_root}",
                       lambda: clients.runtime_state_left(node.runu_root), timeout=15)
    clients.eventually("CNI state left", lambda: node.cni_leftovers([pod]), timeout=15)
    bridge_side = links(str(NETNS_DIR / node.netns))
    assert [n for n in bridge_side if n.startswith("veth")] == [], bridge_side  # CNI DEL removed the host end


def assert_node_gone(node: Node) -> None:
    """With containerd stopped and the namespace deleted, nothing of this run is left on the host."""
    assert node.containerd is not None
    base = node.containerd.base
    assert node.teardown() == []
    assert not base.exists()
    assert clients.mounts_under(base) == []
    assert node.netns not in ip("netns", "list")
    assert node.cni_netns() - node.netns_before == set()
    clients.eventually("containerd processes left", lambda: clients.processes_mentioning(str(base) + "/"), timeout=15)
    cgroup = node.cgroup_parent.strip("/")
    assert [str(d) for d in (Path("/sys/fs/cgroup", cgroup), *Path("/sys/fs/cgroup").glob(f"*/{cgroup}"))
            if d.exists()] == []


# -- the test -----------------------------------------------------------------------------------------------------

@needs_root
def test_unikernel_pod_through_cri_answers_ping(images, node: Node):
    node.start()
    cd, cri, pb = node.containerd, node.cri, node.cri.pb
    assert cd is not None
    version = cri.version()
    assert version.runtime_name == "containerd" and version.runtime_api_version == "v1", version
    node.import_images(images)

    # -- the pod: runu's delegate runs the pause process, in the network namespace CNI set up
    # what a Kubernetes user can set: pod annotations (metadata.annotations), which the kubelet passes on
    pod_config = node.pod_config("unikernel-pod", ANNOTATIONS)
    pod = node.run_pod(pod_config)
    status = cri.pod_sandbox_status(pod, verbose=True)
    assert status.status.state == pb.SANDBOX_READY, status
    assert status.status.runtime_handler == HANDLER
    pod_ip = status.status.network.ip
    assert pod_ip.startswith(node.subnet + ".") and pod_ip != node.gateway, pod_ip
    info = json.loads(status.info["info"])
    spec = info["runtimeSpec"]
    assert spec["annotations"]["io.kubernetes.cri.container-type"] == "sandbox"
    assert spec["annotations"]["org.unikraft.runu.accel"] == "tcg"  # a sandbox is no VM: runu ignores it
    assert spec["process"]["args"] == ["/bin/busybox", "sleep", "2147483647"]
    pod_netns = next(ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network")
    assert pod_netns.startswith(str(NETNS_DIR / "cni-")) or pod_netns.startswith("/var/run/netns/cni-"), pod_netns
    assert Path(pod_netns).name in node.cni_netns() - node.netns_before
    sandbox_pid = info["pid"]
    # argv[0] as the spec has it; `runc start` returns before its init has exec'd the command: wait for it
    pause_argv = ["/bin/busybox", "sleep", "2147483647"]
    clients.eventually("the sandbox's process does not run the image's command",
                       lambda: None if (argv := clients._cmdline(sandbox_pid)) == pause_argv else f"argv {argv}")
    assert f"{node.cgroup_parent}/{pod}" in Path(f"/proc/{sandbox_pid}/cgroup").read_text()  # cgroupsPath
    assert os.readlink(f"/proc/{sandbox_pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert_delegated(node, pod, sandbox_pid)
    assert links(pod_netns) == ["eth0", "lo"]
    assert ipv4_addrs(pod_netns, "eth0") == [f"{pod_ip}/24"]

    # -- the unikernel joins the pod
    cid = cri.create_container(pod, guest_config(pb, ["quiet", f"ping={node.gateway}", "idle"]), pod_config)
    created = cri.container_status(cid, verbose=True)
    assert created.status.state == pb.CONTAINER_CREATED
    app_spec = json.loads(created.info["info"])["runtimeSpec"]
    assert app_spec["annotations"]["io.kubernetes.cri.container-type"] == "container"
    # the runtime handler's pod_annotations let runu's annotation through to the app container's OCI spec
    assert app_spec["annotations"]["org.unikraft.runu.accel"] == "tcg"
    assert app_spec["process"]["args"] == ["/unikraft/bin/kernel", "quiet", f"ping={node.gateway}", "idle"]
    assert {"type": "network", "path": f"/proc/{sandbox_pid}/ns/net"} in app_spec["linux"]["namespaces"]
    cri.start_container(cid)
    log = Path(pod_config.log_directory) / "guest" / "0.log"
    assert cri.container_status(cid).status.log_path == str(log)

    console = wait_for_guest(node, cid, log)
    assert f"{M}network: from netdev.ip" in console, console  # Unikraft 0.16's form
    assert f"{M}network: dns {POD_DNS} - search {POD_SEARCH}" in console, console  # CRI's resolv.conf mount
    assert f"{M}network: eth0 {pod_ip}/24" in console, console
    assert f"{M}network: default via {node.gateway}" in console, console
    assert f"{M}ping {node.gateway}: ok" in console, console  # guest -> pod gateway (the bridge)

    qemus = clients.processes_mentioning(str(cd.base) + "/", names=["qemu-system"])
    assert len(qemus) == 1, qemus
    qemu_argv = clients._cmdline(qemus[0])
    assert qemu_argv[qemu_argv.index("-accel") + 1].split(",")[0] == "tcg"  # the annotation got through
    assert qemu_argv[qemu_argv.index("-m") + 1] == f"{GUEST_MIB}M"  # sized by the container's memory limit
    assert os.readlink(f"/proc/{qemus[0]}/ns/net") == os.readlink(f"/proc/{sandbox_pid}/ns/net")
    assert links(pod_netns) == ["eth0", "lo", "runu0"]  # the macvtap, in the pod's namespace
    macvtap = json.loads(ip("-j", "-n", Path(pod_netns).name, "-d", "link", "show", "runu0"))[0]
    assert macvtap["linkinfo"]["info_kind"] == "macvtap"
    # QEMU got the macvtap's fd through a private device node that is already gone (not in runu's state)
    assert [str(p) for p in node.runu_root.rglob("*") if p.is_char_device() or p.is_block_device()] == []
    assert ipv4_addrs(pod_netns, "eth0") == []  # the guest owns the pod's address now

    # the pod's gateway side (the bridge in containerd's namespace) reaches the guest at the pod IP
    ping = subprocess.run(["ip", "netns", "exec", node.netns, BUSYBOX, "ping", "-c", "3", "-W", "2", pod_ip],
                          capture_output=True, text=True, timeout=60)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"bytes from {pod_ip}" in ping.stdout, ping.stdout

    # -- stop: SIGTERM is the ACPI power button, the guest powers off and QEMU exits 0
    cri.stop_container(cid, grace=20)
    st = cri.container_status(cid).status
    assert st.state == pb.CONTAINER_EXITED and st.exit_code == 0, st
    assert f"{M}power button: powering off" in cri_log_text(log)
    cri.remove_container(cid)
    assert cri.list_containers(pod) == []
    assert not (node.runu_root / cid).exists()
    clients.eventually("QEMU left running",
                       lambda: clients.processes_mentioning(str(cd.base) + "/", names=["qemu-system"]), timeout=15)
    # runu's delete took the macvtap away and gave the address and route back to the pod's eth0
    assert links(pod_netns) == ["eth0", "lo"]
    assert ipv4_addrs(pod_netns, "eth0") == [f"{pod_ip}/24"]
    routes = subprocess.run(["nsenter", f"--net={pod_netns}", "ip", "-4", "route"], capture_output=True,
                            text=True, timeout=30).stdout
    assert f"default via {node.gateway}" in routes, routes

    # -- the pod goes, and with containerd stopped and the namespace deleted, nothing of this run is left
    assert_pod_gone(node, pod, [sandbox_pid])
    assert_node_gone(node)


def http_get(argv_prefix: list[str], host: str, port: int) -> subprocess.CompletedProcess:
    """A GET of / with busybox nc, run through ``argv_prefix`` (e.g. ``ip netns exec NS``)."""
    return subprocess.run([*argv_prefix, BUSYBOX, "nc", "-w", "3", host, str(port)], input="GET / HTTP/1.0\r\n\r\n",
                          capture_output=True, text=True, timeout=30)


@needs_root
def test_pod_with_unikernel_and_busybox_sidecar(images, node: Node):
    """The common shape of a Kubernetes pod: the app (here the Linux test guest as a unikernel) and a sidecar
    (busybox). runu boots the guest; its delegate runs the sidecar as a real container, so ExecSync
    (``kubectl exec``) works in it. What the sidecar reaches of the guest over the network is measured here
    and documented in docs/clients.md (the pod model)."""
    import grpc

    node.start()
    cd, cri, pb = node.containerd, node.cri, node.cri.pb
    assert cd is not None
    node.import_images(images)
    pod_config = node.pod_config("sidecar-pod", ANNOTATIONS)
    pod = node.run_pod(pod_config)
    status = cri.pod_sandbox_status(pod, verbose=True)
    assert status.status.state == pb.SANDBOX_READY, status
    pod_ip = status.status.network.ip
    sandbox_pid = json.loads(status.info["info"])["pid"]
    pod_netns = f"/proc/{sandbox_pid}/ns/net"
    assert_delegated(node, pod, sandbox_pid)

    # -- the app first (the kubelet starts containers in the pod spec's order), then the sidecar
    guest = cri.create_container(pod, guest_config(pb, ["quiet", f"serve={HTTP_PORT}", "idle"]), pod_config)
    cri.start_container(guest)
    # the namespaces the kubelet asks for a pod's container (the proto's default shares the sandbox's PID one)
    sidecar_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="sidecar", attempt=0), image=pb.ImageSpec(image=SIDECAR_REF),
        log_path="sidecar/0.log", linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))))
    sidecar = cri.create_container(pod, sidecar_config, pod_config)
    cri.start_container(sidecar)
    console = wait_for_guest(node, guest, Path(pod_config.log_directory) / "guest" / "0.log")
    assert f"{M}network: eth0 {pod_ip}/24" in console, console
    assert f"{M}http: serving on {HTTP_PORT}" in console, console

    # -- both run: the guest in QEMU (runu's own state), the sidecar as a real container run by the delegate;
    # both in the pod's network namespace
    for cid in (guest, sidecar):
        assert cri.container_status(cid).status.state == pb.CONTAINER_RUNNING, cid
    assert (node.runu_root / guest).is_dir() and not (node.runu_root / "@delegate" / guest).exists()
    sidecar_pid = json.loads(cri.container_status(sidecar, verbose=True).info["info"])["pid"]
    assert_delegated(node, sidecar, sidecar_pid)
    qemus = clients.processes_mentioning(str(cd.base) + "/", names=["qemu-system"])
    assert len(qemus) == 1, qemus
    for pid in (qemus[0], sidecar_pid):
        assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(pod_netns), pid

    # -- ExecSync (kubectl exec) into the sidecar reaches the delegate's exec: output, errors and exit status
    r = cri.exec_sync(sidecar, ["sh", "-c", "echo hello from $(hostname); echo to stderr >&2; exit 3"], 30)
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"hello from sidecar-pod\n", b"to stderr\n"), r
    # into the unikernel it is a clear refusal: a VM has no process tree to run a command in
    with pytest.raises(grpc.RpcError) as refused:
        cri.exec_sync(guest, ["echo", "hi"], 10)
    assert "not supported for unikernels" in (refused.value.details() or ""), refused.value

    # -- from outside the pod (the bridge's side, where the gateway is) the guest answers on the pod IP
    outside = ["ip", "netns", "exec", node.netns]
    ping = subprocess.run([*outside, BUSYBOX, "ping", "-c", "2", "-W", "2", pod_ip], capture_output=True,
                          text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    get = http_get(outside, pod_ip, HTTP_PORT)
    assert get.returncode == 0 and f"runu-linux-guest http {HTTP_PORT}" in get.stdout, get

    # -- what the sidecar reaches of the guest, measured (docs/clients.md, the pod model)
    def in_sidecar(script: str) -> tuple[int, str]:
        res = cri.exec_sync(sidecar, ["sh", "-c", script], 20)
        return res.exit_code, (res.stdout + res.stderr).decode(errors="replace")

    get_from_sidecar = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3"
    # runu moved the pod's address to the guest: the namespace the sidecar shares has no IPv4 address but
    # loopback's, and no route at all, so the pod IP, the gateway and everything else are unreachable ...
    assert in_sidecar("ip -4 -o addr show | grep -v ' lo '; ip -4 route show") == (0, "")
    for what in (f"ping -c 1 -W 2 {pod_ip}", f"{get_from_sidecar} {pod_ip} {HTTP_PORT}",
                 f"ping -c 1 -W 2 {node.gateway}"):
        code, out = in_sidecar(what)
        assert code == 1 and "Network is unreachable" in out, (what, code, out)
    # ... and the guest's port is the guest kernel's, not the pod namespace's: nothing listens on loopback
    code, out = in_sidecar(f"{get_from_sidecar} 127.0.0.1 {HTTP_PORT}")
    assert code == 1 and "Connection refused" in out, out
    # Even with an address of its own on the pod's eth0 (runu does not do this) the sidecar reaches the gateway
    # but not the guest: the guest's NIC is a macvtap whose lower device is that eth0, a macvtap in bridge mode
    # switches frames only between its siblings and the wire, and the bridge at the other end of the veth does
    # not send a frame back out of the port it came in by (no hairpin): ARP for the pod IP gets no answer.
    spare = f"{node.subnet}.254/24"  # host-local hands out addresses from .2 upwards
    subprocess.run(["nsenter", f"--net={pod_netns}", "ip", "addr", "add", spare, "dev", "eth0"], check=True,
                   timeout=30)
    try:
        assert in_sidecar(f"ping -c 2 -W 2 {node.gateway}")[0] == 0
        code, out = in_sidecar(f"ping -c 1 -W 2 {pod_ip}")
        assert code == 1 and "0 packets received" in out, out
        code, out = in_sidecar(f"{get_from_sidecar} {pod_ip} {HTTP_PORT}")
        assert code == 1 and "No route to host" in out, out
    finally:
        subprocess.run(["nsenter", f"--net={pod_netns}", "ip", "addr", "del", spare, "dev", "eth0"], check=True,
                       timeout=30)
    assert http_get(outside, pod_ip, HTTP_PORT).returncode == 0  # the guest still answers from outside

    # -- stop and remove the guest: the pod's eth0 gets its address back, and with it the sidecar its network
    cri.stop_container(guest, grace=20)
    assert (st := cri.container_status(guest).status).state == pb.CONTAINER_EXITED and st.exit_code == 0, st
    cri.remove_container(guest)
    assert ipv4_addrs(pod_netns, "eth0") == [f"{pod_ip}/24"]
    assert in_sidecar(f"ping -c 2 -W 2 {node.gateway}")[0] == 0
    # the sidecar ends on StopContainer's SIGTERM (its shell traps it)
    cri.stop_container(sidecar, grace=10)
    assert (st := cri.container_status(sidecar).status).state == pb.CONTAINER_EXITED and st.exit_code == 0, st
    cri.remove_container(sidecar)
    assert cri.list_containers(pod) == []
    assert not (node.runu_root / guest).exists() and not (node.runu_root / "@delegate" / sidecar).exists()
    clients.eventually("QEMU left running",
                       lambda: clients.processes_mentioning(str(cd.base) + "/", names=["qemu-system"]), timeout=15)

    # -- the pod goes, and with containerd stopped and the namespace deleted, nothing of this run is left
    assert_pod_gone(node, pod, [sandbox_pid, sidecar_pid, qemus[0]])
    assert_node_gone(node)


@needs_root
def test_configmap_like_mount_reaches_the_guest(images, node: Node, tmp_path):
    """A container with a host-path volume laid out as the kubelet lays out a ConfigMap (`key -> ..data/key`,
    `..data -> ..<timestamp>`): the guest reads the key through runu's share and prints it to the container
    log; the pod's /etc/resolv.conf (a mount the CRI plugin adds) is the guest's too."""
    node.start()
    cri, pb = node.cri, node.cri.pb
    node.import_images(images)
    volume = tmp_path / "configmap"
    (volume / "..2026_12_01_00_00_00.1").mkdir(parents=True)
    (volume / "..2026_12_01_00_00_00.1" / "app.conf").write_text("greeting=hello from a ConfigMap\n")
    (volume / "..data").symlink_to("..2026_12_01_00_00_00.1")
    (volume / "app.conf").symlink_to("..data/app.conf")
    pod_config = node.pod_config("mounts-pod", ANNOTATIONS)
    pod = node.run_pod(pod_config)
    container_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="guest", attempt=0),
        image=pb.ImageSpec(image=APP_REF),
        args=["quiet", "cat=/etc/config/app.conf", "cat=/etc/resolv.conf"],
        mounts=[pb.Mount(container_path="/etc/config", host_path=str(volume), readonly=True)],
        log_path="guest/0.log",
        linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(
            memory_limit_in_bytes=(GUEST_MIB + QEMU_OVERHEAD_MIB) << 20)),
    )
    cid = cri.create_container(pod, container_config, pod_config)
    spec = json.loads(cri.container_status(cid, verbose=True).info["info"])["runtimeSpec"]
    resolv = next(m["source"] for m in spec["mounts"] if m["destination"] == "/etc/resolv.conf")
    first_resolv_line = Path(resolv).read_text().splitlines()[0] if Path(resolv).read_text().strip() else ""
    cri.start_container(cid)
    log = Path(pod_config.log_directory) / "guest" / "0.log"
    deadline = time.monotonic() + BOOT_TIMEOUT
    while M + "powering off" not in (console := cri_log_text(log)):
        if time.monotonic() > deadline:
            pytest.fail(f"the guest did not finish:\n{console[-4000:]}")
        time.sleep(0.2)
    assert f"{M}mount /etc/config (ro): ok" in console, console
    assert f"{M}cat /etc/config/app.conf: greeting=hello from a ConfigMap" in console, console
    if first_resolv_line:
        assert f"{M}cat /etc/resolv.conf: {first_resolv_line}" in console, console
    clients.eventually("container still running",
                       lambda: cri.container_status(cid).status.state != pb.CONTAINER_EXITED, timeout=30)
    assert cri.container_status(cid).status.exit_code == 0
    cri.remove_container(cid)
