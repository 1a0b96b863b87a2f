"""Ctrl-C during training: the first asks the loop to stop after its step, the second stops at once."""

from __future__ import annotations

import os
import signal

import pytest

from nima.train.interrupt import stop_on_interrupt


def test_first_ctrl_c_asks_second_stops_then_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt), stop_on_interrupt(True, said.append) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        assert said and "saving a checkpoint" in said[0]
        os.kill(os.getpid(), signal.SIGINT)  # raises here
        pytest.fail("the second Ctrl-C did not stop")
    assert signal.getsignal(signal.SIGINT) is before


def test_disabled_leaves_sigint_alone() -> None:
    """Distributed runs keep Python's own handling: every rank would otherwise stop at a step of its own."""
    with pytest.raises(KeyboardInterrupt), stop_on_interrupt(False, print) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("SIGINT was caught")
    assert not stop.requested
