"""Unikernel support: what upstream libcontainer does not have.

- `kernel`: find and identify the kernel of a unikernel bundle
  (`rootfs/unikraft/bin/kernel`, optional `rootfs/unikraft/bin/initrd`).
- `vmm`: the VMM backend interface, the registry of backends and the choice of
  one per container; `settings`: runu's config file and environment knobs.
- `qemu`, `firecracker`: the backends (binary lookup, accelerator, command
  line, configuration files).
- `bundle`: `plan()`, the decision the runtime takes at create time: what the
  container process runs (a VMM for a unikernel or Linux kernel, the pause
  binary for a CRI sandbox), with which environment and files, and how big
  the VM is.

Imported only on `runu create` (and `runu features`): standard library only,
and nothing heavy at import time (the backend of a container is imported when
it is chosen; `tomllib` only when a config file exists).
"""

KERNEL = "unikraft/bin/kernel"
"""Where a unikernel bundle's rootfs holds its kernel: the file that makes a bundle a unikernel."""
INITRD = "unikraft/bin/initrd"
SANDBOX_ANNOTATION = "io.kubernetes.cri.container-type"
"""The CRI's container-type annotation; the value `sandbox` marks a pod's pause container."""
