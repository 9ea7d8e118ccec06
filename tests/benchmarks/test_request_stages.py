"""benchmarks/request_stages.py runs the real app on the digits model and times every stage.

Never how fast: only that each stage was seen, in order, on a 200 answer.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import request_stages
from service import decoder
from service.engine import Engine


def test_every_stage_is_timed_on_real_requests(tmp_path: Path, capsys) -> None:
    out = tmp_path / "stages.json"
    argv = ["--requests", "40", "--log-level", "warning", "--out", str(out)]
    assert request_stages.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "digits" and result["requests"] == 40
    stages = result["stages_us"]
    assert list(stages) == [label for label, _, _ in request_stages.STAGES]
    assert all(us > 0 for us in stages.values()), stages  # each mark came after the one before
    assert stages["decode (preprocess)"] + stages["model run"] < result["total_us"]
    assert "of which not decode or run" in capsys.readouterr().out


def test_the_timing_wrappers_are_put_back() -> None:
    before = decoder.preprocess, Engine.run_alone
    with request_stages.instrumented():
        assert (decoder.preprocess, Engine.run_alone) != before
    assert (decoder.preprocess, Engine.run_alone) == before
