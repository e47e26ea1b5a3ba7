"""Transition shim: the helpers moved to tests/harness/runu.py (issue 15). Import from `harness.runu`."""

from harness.runu import *  # noqa: F403
from harness.runu import wait_for  # noqa: F401
