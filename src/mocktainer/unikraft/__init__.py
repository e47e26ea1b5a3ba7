"""Unikernel support: what upstream libcontainer does not have.

- `kernel`: find and identify the kernel of a unikernel bundle
  (`rootfs/unikraft/bin/kernel`, optional `rootfs/unikraft/bin/initrd`).
- `qemu`: locate QEMU, decide KVM or TCG, build the VMM command line.
- `bundle`: `plan()`, the decision the runtime takes at create time: what the
  container process runs (QEMU for a unikernel, the pause binary for a CRI
  sandbox) and with which environment.

Everything here is imported on every `runu create`: standard library only, and
nothing heavy at import time.
"""
