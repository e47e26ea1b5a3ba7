#!/usr/bin/env python3
"""List what a `runu` command imports beyond the bare interpreter (run as root after setup).

    python3 bench/imports.py state      # creates a throw-away container, runs `runu state` on it

Every module here is paid on each call containerd makes. The probe container is a plain
bundle run by runu's own path (`main(delegate=False)`): the product hands such a bundle to
its delegate OCI runtime, whose calls import only runu.main, runu.delegate, mocktainer.error
and mocktainer.ids before the exec.
"""

import os
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(TOP, ".venv", "bin", "python3")
if not os.path.exists(PY):
    PY = sys.executable

PROBE = """
import sys
sys.path.insert(0, {src!r})
base = set(sys.modules)
from runu.main import main
sys.stdout = open("/dev/null", "w")
try:
    main({argv!r}, delegate=False)
finally:
    sys.__stderr__.write(" ".join(sorted(set(sys.modules) - base)) + "\\n")
"""


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "state"
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "rootfs", "bin"))
        subprocess.run(["cp", "/bin/busybox", os.path.join(tmp, "rootfs", "bin")], check=True)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write('{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["/bin/busybox","sleep","60"]},'
                    '"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}')
        root = os.path.join(tmp, "state")
        lib = f"import sys; sys.path.insert(0, {os.path.join(TOP, 'src')!r}); from runu.main import main; " \
              "sys.exit(main(sys.argv[1:], delegate=False))"
        subprocess.run([PY, "-I", "-S", "-c", lib, "--root", root, "create", "--bundle", tmp, "probe"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            argv = ["--root", root, command, "probe"] if command != "list" else ["--root", root, "list"]
            probe = PROBE.format(src=os.path.join(TOP, "src"), argv=argv)
            r = subprocess.run([PY, "-I", "-S", "-c", probe], capture_output=True, text=True)
            print(f"runu {command} imports:", r.stderr.strip())
        finally:  # the probe's init outlives this script otherwise, waiting on its exec.fifo
            subprocess.run([PY, "-I", "-S", "-c", lib, "--root", root, "delete", "--force", "probe"], check=True)


if __name__ == "__main__":
    main()
