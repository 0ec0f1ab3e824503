"""Smoke tests of benchmarks/: each script runs at a tiny size and writes well-formed JSON.

No timing is asserted (the numbers depend on the machine); only structure and finite values.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{script}.json"
    command = [sys.executable, str(BENCHMARKS / f"{script}.py"), *args, "--threads", "1", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_step_cost(tmp_path):
    result = run("step_cost", tmp_path, "--tiny", "--layers", "2", "--seq-len", "16", "--batch", "2",
                 "--reps", "1")
    assert isinstance(result["device"], str) and result["machine"]["torch"]
    assert set(result["strategies"]) == {"full", "cut0", "plan", "plan-cached", "lora", "lora-plan", "lisa"}
    for name, row in result["strategies"].items():
        assert {"step_seconds", "ratio_measured", "ratio_model", "peak_mem_mb", "mem_model_mb"} <= set(row), name
        assert all(positive(row[k]) for k in ("step_seconds", "ratio_measured", "ratio_model", "mem_model_mb"))
        assert math.isfinite(row["peak_mem_mb"]) and row["peak_mem_mb"] >= 0
    full = result["strategies"]["full"]
    assert full["ratio_measured"] == 1.0 and full["ratio_model"] == pytest.approx(1.0)
    model = {name: row["ratio_model"] for name, row in result["strategies"].items()}
    assert model["plan-cached"] < model["plan"] < model["cut0"] < 1


@pytest.mark.slow
def test_trace_memory(tmp_path):
    result = run("trace_memory", tmp_path, "--tiny", "--layers", "2", "--shapes", "2x16,2x32")
    assert [(s["batch"], s["seq_len"]) for s in result["shapes"]] == [(2, 16), (2, 32)]
    for row in result["shapes"]:
        assert all(positive(row[k]) for k in ("forward_mb", "backbone_mb", "trace_mb", "ratio",
                                                "ratio_backbone", "kept_mb", "logits_mb"))
    assert result["shapes"][0]["kept_mb"] == result["shapes"][1]["kept_mb"]  # independent of the length


@pytest.mark.slow
def test_plan_cost(tmp_path):
    result = run("plan_cost", tmp_path, "--n-calib", "8", "--max-length", "32", "--batch", "4",
                 "--steps", "2")
    assert result["n_calib"] == 8 and len(result["step_samples"]) == 2
    keys = ("planning_seconds", "trace_seconds", "step_seconds", "epoch_seconds", "ratio_to_epoch",
            "ratio_to_calib_epoch", "forward_share_model")
    assert all(positive(result[k]) for k in keys)
    # one epoch over the whole training split: as many steps as batches of it
    assert result["epoch_seconds"] == pytest.approx(result["step_seconds"] * -(-result["train_examples"] // 4))
    assert result["ratio_to_epoch"] == pytest.approx(result["planning_seconds"] / result["epoch_seconds"])
    assert result["goal_met"] == (result["ratio_to_epoch"] < result["goal"])
