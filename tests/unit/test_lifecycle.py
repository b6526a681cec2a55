"""The recording lifecycle table: every allowed move, every other move refused."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from callrec.recording.lifecycle import _ALLOWED, Failure, IllegalTransition, Lifecycle, State

HAPPY = [
    State.JOURNALED,
    State.STARTING,
    State.RECORDING,
    State.STOPPING,
    State.ENDED,
    State.CLOSED,
    State.STORED,
]


def test_the_happy_path_ends_stored() -> None:
    life = Lifecycle()
    for state in HAPPY:
        life.to(state)
    assert life.done and life.state is State.STORED and life.failure is None


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(State, State)))
def test_only_the_table_s_moves_are_allowed(src: State, dst: State) -> None:
    life = Lifecycle(src)
    if dst is State.FAILED:
        with pytest.raises(IllegalTransition):
            life.to(dst)  # failing needs a reason
    elif (src, dst) in _ALLOWED:
        assert life.to(dst) is dst
    else:
        with pytest.raises(IllegalTransition):
            life.to(dst)
        assert life.state is src, "a refused move changes nothing"


@pytest.mark.parametrize("reason", get_args(Failure))
def test_each_failure_has_exactly_one_state_it_comes_from(reason: Failure) -> None:
    sources = [s for s in State if s not in (State.STORED, State.FAILED)]
    allowed = []
    for src in sources:
        life = Lifecycle(src)
        try:
            life.fail(reason)
        except IllegalTransition:
            assert life.state is src
            continue
        assert life.state is State.FAILED and life.failure == reason
        allowed.append(src)
    assert len(allowed) == 1


def test_adopted_and_recovered_enter_midway() -> None:
    assert Lifecycle.adopted().state is State.RECORDING
    assert Lifecycle.recovered().state is State.ENDED
    life = Lifecycle.recovered()
    life.to(State.CLOSED)
    life.fail("no_file")
    assert life.done
