"""The one lifecycle state: its transitions, the probe answer, and admission."""

from __future__ import annotations

import pytest

from service.errors import Draining, StartFailed, Starting
from service.server_state import Phase, ServerState


def test_starting_then_ready_then_draining_reports_the_gauge() -> None:
    gauge: list[bool] = []
    state = ServerState(on_ready=gauge.append)
    assert state.phase is Phase.STARTING and isinstance(state.refusal(), Starting)
    state.to_ready()
    assert state.ready and state.refusal() is None
    assert state.to_draining() and not state.to_draining()  # the second signal sees it
    assert isinstance(state.refusal(), Draining)
    state.to_ready()  # a warm-up finishing late does not undo the drain
    assert state.draining and gauge == [True, False]


def test_failed_warm_up_keeps_its_reason_off_the_probe_until_draining() -> None:
    state = ServerState()
    state.to_failed("warm-up failed: MemoryError: out of memory")
    state.to_ready()
    refusal = state.refusal()
    assert isinstance(refusal, StartFailed) and "out of memory" in state.reason
    assert "out of memory" not in refusal.message  # probes are open to anyone: no detail
    state.to_draining()
    assert isinstance(state.refusal(), Draining)


def test_admission_counts_and_refuses_while_draining() -> None:
    state = ServerState()
    with state.admitted():
        assert state.in_flight == 1
    assert state.in_flight == 0
    state.to_draining()
    with pytest.raises(Draining), state.admitted():
        pass
    assert state.in_flight == 0
