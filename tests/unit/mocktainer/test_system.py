"""The raw-call wrappers of mocktainer.system, each called for real, in a throw-away interpreter (they unshare and
mount there), and without ctypes: its import alone cost every create about 2.5 ms."""

import os
import subprocess
import sys
import textwrap

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")

PROBE = """
import errno, os, sys, tempfile
sys.path.insert(0, {src!r})
from mocktainer import system

assert system.prctl(3) in (0, 1)  # PR_GET_DUMPABLE: the call's own result comes back
try:
    system.prctl(0x7FFF)
except OSError as e:
    assert e.errno == errno.EINVAL, e  # errno of the failed call, not of a later one
else:
    raise AssertionError("an unknown prctl option succeeded")

tmp = tempfile.mkdtemp()
target = os.path.join(tmp, "file")
open(target, "w").close()
os.symlink(tmp, os.path.join(tmp, "link"))
os.close(system.open_no_symlinks(target, os.O_RDONLY))
try:
    system.open_no_symlinks(os.path.join(tmp, "link", "file"), os.O_RDONLY)
except OSError as e:
    assert e.errno == errno.ELOOP, e
else:
    raise AssertionError("openat2 followed a symbolic link")

assert system.join_session_keyring("_ses.mocktainer-unit-test") > 0

host_net = os.stat("/proc/self/ns/net").st_ino
host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
system.unshare(system.CLONE_NEWNET | 0x00020000)  # and CLONE_NEWNS, for the mount below
assert os.stat("/proc/self/ns/net").st_ino != host_net
system.setns(host_fd, system.CLONE_NEWNET)
assert os.stat("/proc/self/ns/net").st_ino == host_net

system.mount("none", "/", None, 0x4000 | 0x40000)  # MS_REC | MS_PRIVATE: nothing reaches the host's mounts
system.mount("tmpfs", tmp, "tmpfs", 0, "size=1m")
assert not os.path.exists(target), "the tmpfs is not over the directory"
system.umount2(tmp)
assert os.path.exists(target)

print(" ".join(m for m in ("ctypes", "_ctypes") if m in sys.modules))
"""


def test_each_wrapper_works_and_none_imports_ctypes():
    out = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE.format(src=os.path.abspath(SRC))],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["_ctypes"]


def test_the_init_imports_no_ctypes_before_it_needs_the_c_library():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.abspath(SRC)!r})
        import mocktainer.init, mocktainer.system
        print("_ctypes" in sys.modules, "ctypes" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
