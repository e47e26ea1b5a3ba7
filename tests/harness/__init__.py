"""Test harness: drive real clients (containerd, podman, CRI) and runtimes, and wait for what they do."""
