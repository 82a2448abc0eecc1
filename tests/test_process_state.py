"""The root conftest's check of process-wide state sees each setting a leaking test could leave behind.

Each case changes one setting inside a ``with`` block (undone on exit, so the check after the test
passes) and asserts that ``_process_state`` read inside the block differs from the clean state read
at start-up: a leak of that setting would fail the test that leaked it, not a later one.
"""

from __future__ import annotations

import contextlib

from torch.utils._python_dispatch import TorchDispatchMode

import conftest
from torchmetrics_ext.utilities.device import force_device_path


class _PassThrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _changed_inside(block: contextlib.AbstractContextManager) -> set[str]:
    with block:
        inside = conftest._process_state()
    return {name for name in inside if inside[name] != conftest._CLEAN_STATE[name]}


def test_a_dispatch_mode_left_on_the_stack_is_seen():
    """A ``TorchDispatchMode`` (the tester's ``AtenOps``, test_auc's) left entered sees every later op."""
    assert _changed_inside(_PassThrough()) == {"torch dispatch modes"}


def test_the_forced_device_path_is_seen():
    """``force_device_path`` is one process-wide flag: left on, every later CPU test runs the device path."""
    assert _changed_inside(force_device_path()) == {"forced device path"}


def test_the_clean_state_is_read_now():
    assert conftest._process_state() == conftest._CLEAN_STATE
