"""Control groups: where a container's cgroup is, creating it, its limits, its pids, removing it.

Standard library only, and imported only by code that needs a cgroup (create,
delete, `ps` and `kill --all` of a container that has one): `runu state` never
loads it.

Where (`linux.cgroupsPath`, as runc's cgroupfs and systemd drivers read it):
- cgroupfs (the default driver): `/a/b` is below the root of every hierarchy
  (`/sys/fs/cgroup/memory/a/b`, ...); a relative `a/b` is below this process'
  own cgroup in each hierarchy (runc's behaviour; on a pure cgroup v2 host below
  the *parent* of our own cgroup, which is what runc does too: a cgroup that
  holds processes cannot give controllers to its children). The path is
  cleaned lexically (`..` cannot climb above the root). Empty means
  `/<parent>/<id>-<checksum of the root>` (see default_name; the parent is the
  tool's choice, Config.cgroup_parent: `/runu/...` for runu, else DEFAULT_PARENT;
  runc's default is `<id>` relative to its own cgroup; a fixed, absolute place is
  easier to find and to clean).
  A path that is the root itself, or that looks like systemd's
  `slice:prefix:name` form while --systemd-cgroup is not given, is refused.
- systemd (`--systemd-cgroup`): `slice:prefix:name`, e.g.
  `system.slice:runu:ID` is `/system.slice/runu-ID.scope` (empty: the slice
  system.slice and the parent as prefix); a dashed slice
  nests (`a-b.slice` is `/a.slice/a-b.slice`), `-.slice` is the root, an empty
  slice is `system.slice`; a name ending in `.slice` is used as is, otherwise
  the unit is `<prefix>-<name>.scope` (`<name>.scope` for an empty prefix).
  Empty means `system.slice:runu:<id>`. runu never talks to systemd (no D-Bus,
  and these machines run no systemd): it makes those directories itself in
  every hierarchy, as if systemd had made the scope. On a host that does run
  systemd, systemd does not know the scope, so its properties and
  `systemctl` do not apply to it.

Which hierarchies (detected from /proc/self/mountinfo, nothing assumed): the v1
hierarchies holding cpu, cpuacct, cpuset, memory, pids and `name=systemd`
(co-mounted ones once), and the cgroup v2 hierarchy when one is mounted
(`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a hybrid
one). state.json's `cgroup_paths` maps each to the directory, keyed like runc:
the v1 controller names and "" for the v2 hierarchy.

Limits, from `linux.resources` (other fields are ignored), each written to the
hierarchy that holds the controller (v1 if it is mounted there, else v2 when
the v2 root offers it; on v2 the controller is enabled in the ancestors'
`cgroup.subtree_control` first):

    OCI                  v1 file                        v2 file
    memory.limit         memory.limit_in_bytes          memory.max (-1: max)
    memory.reservation   memory.soft_limit_in_bytes     memory.low
    memory.swap          memory.memsw.limit_in_bytes    memory.swap.max (swap - limit)
    cpu.shares           cpu.shares                     cpu.weight (converted as runc does)
    cpu.quota, period    cpu.cfs_quota_us, _period_us   cpu.max "QUOTA|max PERIOD" (period 100000)
    cpu.cpus, mems       cpuset.cpus, cpuset.mems       cpuset.cpus, cpuset.mems
    pids.limit           pids.max (<0: max)             pids.max

Zero means "not set" for every one of them (as in runc). On v1 a new cpuset
cgroup first gets its parent's cpus and mems (the kernel refuses tasks in an
empty cpuset), all before the process is moved in.

What fails and what only warns (on the `mocktainer` logger):
- errors: an invalid cgroupsPath or resource value (ConfigError, before any
  directory exists); an existing cgroup at that path that already holds
  processes or has cgroups below it; a given cgroupsPath that could not be created in any hierarchy.
  Whatever was made is removed again.
- warnings: a hierarchy where the directory cannot be made or the process
  cannot be moved (read-only, no permission): the container is not confined
  by that controller; a limit file that is missing or refuses the value; a
  limit whose controller is not mounted; the default path on a host without
  any writable cgroup hierarchy (the container then runs in runu's cgroup).

Removal (`remove`) deletes only the leaf in each hierarchy (like runc; a parent
such as `/kubepods/...` or a slice is not ours to remove) plus, for the default
path, its parent (runu's `/runu`) when it is left empty. It kills nothing: a cgroup
still holding processes is retried briefly (EBUSY while tasks finish exiting),
then reported as an error naming them.

The package, by concern: `mounts` (hierarchies, Host), `paths` (cgroupsPath),
`limits` (linux.resources), `files` (a cgroup's files), `manage` (plan, create,
remove, pids) and `warmup` (create's early no-op move). Every name stays
importable from `mocktainer.cgroups`.
"""

from .mounts import (  # noqa: F401
    Host, Mount, UNIFIED, V1_JOIN, _V1_CONTROLLERS, _join, _unescape, cgroup_mode, parse_mountinfo,
    parse_proc_cgroup,
)
from .paths import (  # noqa: F401
    DEFAULT_PARENT, DEFAULT_SLICE, _looks_systemd, clean_path, expand_slice,
    inner_path, systemd_path,
)
from .limits import (  # noqa: F401
    Limits, _get, _max, check_resources, shares_to_weight, swap_v2,
)
from .files import (  # noqa: F401
    _add_pid, _cpuset_fill, _enable_v2, _mkdirs, _read, _warn, _write, _write_limits, read_pids,
)
from .manage import (  # noqa: F401
    _apply, _is_ancestor_of_any, _remove_tree, _rmdirs, create, default_name, paths_of, pids, plan, remove,
)
from .warmup import (  # noqa: F401
    _own_procs_files, reap_warm_up, warm_up,
)
