"""Transition shim: the client harness moved to the `tests/harness/` package (issue 15).

New code imports from the module that owns a helper: `harness.procs` (commands, processes, reaping),
`harness.fs` (mounts, trees, cgroups), `harness.pty`, `harness.images`, `harness.containerd`,
`harness.podman`, `harness.wait`. This file only re-exports them for tests not yet moved over.
"""

from harness.containerd import *  # noqa: F403
from harness.fs import *  # noqa: F403
from harness.images import *  # noqa: F403
from harness.images import KEEP  # noqa: F401
from harness.podman import *  # noqa: F403
from harness.procs import *  # noqa: F403
from harness.procs import cmdline as _cmdline  # noqa: F401
from harness.procs import read_stat as _read_stat  # noqa: F401
from harness.pty import *  # noqa: F403
from harness.wait import *  # noqa: F403
