"""Named points in the create and start flows where a test can kill the caller.

Crash-safety is only believable when a real SIGKILL lands between the steps
that matter: after the init exists, after its namespaces are set up, after
state.json is written... Setting MOCKTAINER_FAILPOINT=<name> in the
environment of a process using the library makes it SIGKILL itself when it
reaches that point (the names are listed in POINTS). Unset, a point costs one
comparison.
"""

import os

POINTS = (
    "create:dir",  # directory, VMM files and exec.fifo made; no init yet
    "create:init",  # init forked; bootstrap message not sent
    "create:bootstrap",  # bootstrap message sent: the init is setting up namespaces
    "create:creating",  # state.json says "creating"; the cgroup is not made yet
    "create:cgroup",  # init placed in its cgroup; configuration not sent
    "create:state",  # state.json says "created"; the init has not been told to go on
    "create:ready",  # the init waits on exec.fifo; console and pid file not handed over
    "start:fifo",  # exec.fifo opened for reading; nothing read yet
    "start:exec",  # the init was released; its exec not seen yet
)

_WANTED = os.environ.get("MOCKTAINER_FAILPOINT")


def hit(name: str) -> None:
    if _WANTED == name:
        os.kill(os.getpid(), 9)
