#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) and run the whole test suite.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$top/scripts/setup.sh"

# crun (a reference runtime in the tests) refuses a hybrid cgroup host while any
# controller is still attached to the v2 hierarchy; give each its own v1 mount.
if [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    mkdir -p "/sys/fs/cgroup/$c"
    mountpoint -q "/sys/fs/cgroup/$c" || mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || true
  done
fi

cd "$top"
exec "$top/.venv/bin/python3" -m pytest -q -ra tests "$@"
