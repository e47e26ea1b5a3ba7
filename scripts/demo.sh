#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) and boot a unikernel as an OCI container through `runu run`.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$top/scripts/setup.sh"

demo=${RUNU_DEMO_DIR:-/tmp/runu-demo}
rm -rf "$demo"
mkdir -p "$demo/bundle/rootfs/unikraft/bin"
# The demo unikernel: the project's tiny test kernel (PVH ELF64), built here with gcc and ld.
kernel=$("$top/.venv/bin/python3" "$top/tests/guest/build.py" "$demo/build" | grep pvh)
cp "$kernel" "$demo/bundle/rootfs/unikraft/bin/kernel"

# A unikernel bundle: `runu spec` writes config.json; the args after the kernel go to the guest.
runu spec --bundle "$demo/bundle"
"$top/.venv/bin/python3" - "$demo/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["/unikraft/bin/kernel", "halt", "--", "hello", "from", "a", "unikernel"]
json.dump(spec, open(path, "w"), indent=2)
PY

echo "+ runu run --bundle $demo/bundle runu-demo"
# `halt` ends the guest as a Unikraft application's return does (port 0x501): exit status 0.
status=0
runu --root "$demo/state" run --bundle "$demo/bundle" runu-demo || status=$?
echo "+ the unikernel exited with status $status"
exit "$status"
