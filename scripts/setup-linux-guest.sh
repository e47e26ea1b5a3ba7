#!/usr/bin/env bash
# Fetch what the offline Linux test guest (tests/guest/linux.py) is built from:
# Debian 12's cloud kernel, downloaded (not installed) with `apt-get download`
# and extracted into <repo>/.cache/linux-guest/, and busybox-static for the
# initramfs. Run as root on Debian 12. Idempotent: a second run downloads nothing.
#
#   .cache/linux-guest/linux-image-6.1.0-NN-cloud-amd64_*.deb
#   .cache/linux-guest/root/boot/vmlinuz-6.1.0-NN-cloud-amd64
#   .cache/linux-guest/root/lib/modules/6.1.0-NN-cloud-amd64/...
#   .cache/linux-guest/package   (the name of the versioned package)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="$top/.cache/linux-guest"
meta=linux-image-cloud-amd64
export DEBIAN_FRONTEND=noninteractive

if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
  echo "setup-linux-guest: installing busybox-static"
  apt-get update -qq
  apt-get install -y -qq busybox-static >/dev/null
fi

# The meta-package depends on exactly one versioned kernel package.
resolve() {
  apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1
}
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(resolve || true)
fi
if [ -z "$pkg" ]; then
  echo "setup-linux-guest: cannot resolve $meta to a versioned kernel package (apt-cache depends $meta)" >&2
  exit 1
fi

mkdir -p "$cache"
if [ -f "$cache/package" ] && [ "$(cat "$cache/package")" = "$pkg" ] \
   && compgen -G "$cache/root/boot/vmlinuz-*" >/dev/null; then
  exit 0   # already there
fi

# Download into a temporary directory, so an interrupted run leaves no half file behind.
tmp=$(mktemp -d "$cache/.dl.XXXXXX")
chmod 755 "$tmp"   # apt downloads as _apt when it can write there
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); then
  apt-get update -qq
  (cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
fi
deb=$(ls "$tmp"/*.deb)
mkdir "$tmp/root"
dpkg-deb -x "$deb" "$tmp/root"

rm -rf "$cache/root" "$cache"/*.deb
mv "$deb" "$cache/"
mv "$tmp/root" "$cache/root"
echo "$pkg" > "$cache/package"
echo "setup-linux-guest: $pkg in $cache"
