"""The capstone's rule scored on the stored oracle sweeps, through ``freezelab rules score``.

Two runs of the command, neither in the grading process:

1. the student's rule (the pre-registration cell's definitions, nothing else of the notebook) is run
   on every stored trace, each trace's fingerprint (`DIGEST`) and the cut recorded;
2. a rules file the grader writes, which returns those recorded cuts and runs no student code, is scored
   against the paper's rule, top-25% and the depth-only rule: these are the numbers graded.

So whatever the rule patches in step 1 (numpy, freezelab) cannot touch the scoring in step 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

# A stored trace's fingerprint, the same in both runs: L, every lens's deviations and the cost curve.
DIGEST = '''
import hashlib as _hashlib

import numpy as _np


def _digest(t):
    h = _hashlib.sha256(str(int(t.num_layers)).encode())
    for name in sorted(t.deviation):
        h.update(name.encode())
        h.update(_np.ascontiguousarray(t.deviation[name], dtype=_np.float64).tobytes())
    h.update(_np.ascontiguousarray(t.cost, dtype=_np.float64).tobytes())
    return h.hexdigest()
'''
# Step 1: the student's definitions run in a namespace of their own; `rule` records what it returns.
RECORD = DIGEST + '''
import json as _json

_ns = {{"__name__": "__notebook__"}}
exec(compile({source!r}, "<notebook>", "exec"), _ns)
_picked = {{}}


def rule(t):
    key = _digest(t)
    k = _ns["rule"](t)
    _picked[key] = int(k) if isinstance(k, int) or hasattr(k, "__index__") else k
    with open({picked!r}, "w") as f:
        _json.dump(_picked, f)
    return k
'''
# Step 2: the recorded cuts, scored (no student code).
REPLAY = DIGEST + '''
CUTS = {cuts!r}


def your_rule(t):
    return CUTS[_digest(t)]
'''
TIMEOUT = 600  # seconds for each run of freezelab rules score


def _rules_score(rules_file: Path, oracles: Sequence[Path], out: Path) -> tuple[bool, str]:
    """Run ``freezelab rules score`` on `rules_file` (JSON to `out`): (it succeeded, its last error line)."""
    cmd = [sys.executable, "-I", "-m", "freezelab.cli", "rules", "score", str(rules_file), "--json", str(out),
           "--oracles", *(str(Path(o).resolve()) for o in oracles)]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "FREEZELAB_CACHE", "LANG", "TMPDIR")}
    try:
        proc = subprocess.run(cmd, cwd=rules_file.parent, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return False, f"freezelab rules score did not finish within {TIMEOUT} s"
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 0 and out.exists(), (lines[-1] if lines else f"exit status {proc.returncode}")


def _interval(x: dict, scale: float = 1.0, digits: int = 2) -> str:
    return f"{x['mean'] * scale:.{digits}f} [{x['lo'] * scale:.{digits}f}, {x['hi'] * scale:.{digits}f}]"


def summary(scores: dict, name: str = "your_rule") -> str:
    """One paragraph of `freezelab rules score`'s JSON: the rule's mean metrics and its paired differences."""
    mine = scores["rules"][name]
    parts = [f"scored on {len(scores['pairs_scored'])} stored model x data set pairs: mean cost regret "
             f"{_interval(mine['cost_regret'])}, frontier regret {_interval(mine['frontier_regret_acc'], 100, 1)} "
             "points"]
    for ref, d in scores.get("vs", {}).get(name, {}).items():
        delta = d["delta_cost_regret"]
        parts.append(f"cost regret saved against {ref} {_interval(delta)}")
    return "; ".join(parts) + " (means over pairs, 95% paired bootstrap intervals)"


def score_rule(source: str, oracles: Sequence[Path]) -> tuple[float, str]:
    """(share of the points, feedback) for the rule `rule` defined by `source`, on the oracles in `oracles`."""
    with tempfile.TemporaryDirectory(prefix="freezelab-oracles-") as tmp:
        tmp = Path(tmp)
        picked, record, replay = tmp / "picked.json", tmp / "record.py", tmp / "replay.py"
        record.write_text(RECORD.format(source=source, picked=str(picked)))
        done, why = _rules_score(record, oracles, tmp / "record.json")
        if not done:
            return 0.0, f"your rule could not be scored on the stored oracles: {why}"
        cuts = json.loads(picked.read_text()) if picked.exists() else {}
        if not cuts or not all(isinstance(k, int) and not isinstance(k, bool) for k in cuts.values()):
            return 0.0, "your rule did not return whole-number cuts on the stored oracles"
        replay.write_text(REPLAY.format(cuts=cuts))
        done, why = _rules_score(replay, oracles, tmp / "scores.json")
        if not done:
            return 0.0, f"freezelab rules score failed on the recorded cuts: {why}"
        return 1.0, summary(json.loads((tmp / "scores.json").read_text()))
