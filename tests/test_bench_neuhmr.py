"""bench/neuhmr.py's smoke run (T = 4, 8; 2 steps; tiny GHN): one row per T with a positive,
finite cost per frame and memory, in the printed table and the JSON."""
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import neuhmr  # noqa: E402


@pytest.mark.slow  # ~80 s on 2 cores: the bench is run by hand, its smoke run kept out of CI
def test_smoke_run_reports_every_clip_length(tmp_path, capsys):
    out = tmp_path / "neuhmr.json"
    returned = neuhmr.main(["--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["rows"] == json.loads(json.dumps(returned["rows"]))
    rows = result["rows"]
    assert [r["frames"] for r in rows] == [4, 8]
    for r in rows:
        assert r["steps_run"] == 2 and r["nonfinite_steps"] == 0
        for k in ("s_per_frame", "prepare_s", "step_s", "optimise_s", "eval_s", "steps_per_s"):
            assert math.isfinite(r[k]) and r[k] > 0, (r["frames"], k, r[k])
        assert math.isfinite(r["final_loss"])
        assert r["peak_memory_bytes"] > 0
        assert r["step_bytes"] is None or r["step_bytes"] > 0
        assert math.isclose(r["s_per_frame"] * r["frames"], r["total_s"])
    fit = result["fit"]
    assert all(math.isfinite(v) for v in fit.values())
    assert result["optimize_config"]["optim"]["batch_frames"] == 4
    # The refinement's progress hook is restored after the run.
    from neuhmr_jax import optimize
    assert optimize._bar.__module__ == "neuhmr_jax.optimize"
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)
