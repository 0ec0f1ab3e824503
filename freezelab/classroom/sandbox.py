"""Call a student's function in a process of its own, and bring back only the values it returned.

``freezelab grade`` never runs student code in its own process. From the submitted notebook it takes the
*source* of its top-level imports, function and class definitions and literal constants (`definitions`:
nothing else of the notebook's state), and `call_all` runs them in a fresh ``python -I`` process
(``python -m freezelab.classroom.sandbox JOB RESULT``), feeding it the hidden cases' inputs (`call_all`). The values
come back as JSON (numbers, arrays as nested lists with their dtype: `encode` / `decode`, never pickle),
and the grading process compares them with freezelab's reference. Whatever the student's code patches
(numpy, torch, freezelab, even from inside a function's body) stays in that other process.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64")  # what may come back
SANDBOX_TIMEOUT = 300  # seconds for one sandbox process


@dataclass(frozen=True)
class Outcome:
    """What one call returned (`value`, decoded) or why it did not (`error`: the feedback, e.g. a refusal)."""

    value: Any = None
    error: str | None = None
    not_implemented: bool = False


def definitions(sources: Sequence[str]) -> str:
    """The imports, function and class definitions and literal constants of notebook code cells, in order.

    IPython syntax is turned into Python first (as Jupyter does); a cell that still does not parse is
    skipped. Statements with effects (assignments to attributes, calls, loops) are left out.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    kept = []
    for source in sources:
        try:
            tree = ast.parse(TransformerManager().transform_cell(source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kept.append(ast.unparse(node))
            elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
                try:
                    ast.literal_eval(node.value)
                except ValueError:
                    continue
                kept.append(ast.unparse(node))
    return "\n\n".join(kept) + "\n"


def encode(value: Any) -> Any:
    """A JSON-able form of a value: numbers, strings, None, arrays, tensors, and lists, tuples, dicts (string
    keys) and SimpleNamespaces of them."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.name not in DTYPES:
            raise TypeError(f"an array of dtype {value.dtype}")
        return {"array": value.dtype.name, "shape": list(value.shape), "data": value.ravel().tolist()}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list": [encode(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: encode(v) for k, v in value.items()}}
    if isinstance(value, SimpleNamespace):  # an object with attributes: e.g. a stored trace for a rule
        return {"namespace": {k: encode(v) for k, v in vars(value).items()}}
    raise TypeError(f"a {type(value).__name__}")


def decode(obj: Any, torch: bool = False) -> Any:
    """The value `encode` wrote (arrays as numpy, or as torch tensors when `torch`); TypeError if malformed."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict) and obj.keys() == {"array", "shape", "data"} and obj["array"] in DTYPES:
        out = np.array(obj["data"], dtype=obj["array"]).reshape([int(n) for n in obj["shape"]])
        if torch:
            import torch as th

            return th.from_numpy(out.copy())
        return out
    if isinstance(obj, dict) and len(obj) == 1:
        kind, items = next(iter(obj.items()))
        if kind in ("tuple", "list") and isinstance(items, list):
            values = [decode(v, torch) for v in items]
            return tuple(values) if kind == "tuple" else values
        if kind in ("dict", "namespace") and isinstance(items, dict):
            values = {str(k): decode(v, torch) for k, v in items.items()}
            return values if kind == "dict" else SimpleNamespace(**values)
    raise TypeError(f"not a value freezelab grade reads: {str(obj)[:80]}")


@dataclass(frozen=True)
class Call:
    """One call to make in the sandbox: `function` of the notebook on `args` (the checks' hint and bans)."""

    function: str
    args: tuple
    hint: str = ""
    banned: tuple[str, ...] = ()


def call_all(source: str, calls: Sequence[Call], timeout: int = SANDBOX_TIMEOUT) -> list[Outcome]:
    """Every call on the definitions `source`, in a fresh process; one Outcome per call, in order.

    One process serves them all (the imports are paid once); it writes one line per call as it goes. If
    it dies or hangs, the call it was on fails (and the rest of that function's calls after a hang) and a
    new process takes the remaining ones.
    """
    outcomes: list[Outcome] = []
    while len(outcomes) < len(calls):
        rest = calls[len(outcomes):]
        lines, why, hung = _run(source, rest, timeout)
        outcomes += [_outcome(line, call.function) for line, call in zip(lines, rest)]
        if len(lines) < len(rest):  # the process stopped on rest[len(lines)]
            failed = rest[len(lines)]
            error = Outcome(error=f"{failed.function} could not be called: {why}")
            outcomes.append(error)
            while hung and len(outcomes) < len(calls) and calls[len(outcomes)].function == failed.function:
                outcomes.append(error)  # it would hang again
    return outcomes


def _run(source: str, calls: Sequence[Call], timeout: int) -> tuple[list, str, bool]:
    """(one result per call made, why the process stopped early, whether it hung) from one sandbox process."""
    job = {"source": source, "calls": [{"function": c.function, "hint": c.hint, "banned": list(c.banned),
                                        "torch": any(hasattr(a, "detach") for a in c.args),
                                        "args": encode(tuple(c.args))} for c in calls]}
    with tempfile.TemporaryDirectory(prefix="freezelab-sandbox-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.jsonl"
        job_path.write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "FREEZELAB_CACHE", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS", "LANG", "TMPDIR")}
        hung = False
        try:
            proc = subprocess.run([sys.executable, "-I", "-m", "freezelab.classroom.sandbox", str(job_path),
                                   str(result_path)], cwd=tmp, env=env, capture_output=True, text=True,
                                  timeout=timeout)
            why = (proc.stderr.strip().splitlines() or [f"the process ended (exit status {proc.returncode})"])[-1]
        except subprocess.TimeoutExpired:
            why, hung = f"it did not return within {timeout} s", True
        lines = []
        if result_path.exists():
            for line in result_path.read_text().splitlines()[:len(calls)]:
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    break
    return lines, why, hung


def _outcome(raw: Any, function: str) -> Outcome:
    if not isinstance(raw, dict):
        return Outcome(error=f"{function} returned nothing freezelab grade reads")
    if "error" in raw:
        return Outcome(error=str(raw["error"]), not_implemented=bool(raw.get("not_implemented")))
    try:
        return Outcome(value=decode(raw.get("value")))
    except (TypeError, ValueError) as err:
        return Outcome(error=f"{function} returned {err}")


def _main(job_path: str, result_path: str) -> None:
    """In the sandbox process: define the notebook's functions, make every call, one result line each."""
    from freezelab.classroom.checks.common import call

    job = json.loads(Path(job_path).read_text())
    namespace: dict = {"__name__": "__notebook__"}
    try:
        exec(compile(job["source"], "<notebook>", "exec"), namespace)  # noqa: S102 - this process is the sandbox
        failed = None
    except Exception as err:  # noqa: BLE001 - the notebook's definitions failed: every call fails
        failed = f"the notebook's definitions did not run: {type(err).__name__}: {err}"
    with open(result_path, "a", encoding="utf-8") as out:
        for job_call in job["calls"]:
            out.write(json.dumps(_make(job_call, namespace, failed, call)) + "\n")
            out.flush()


def _make(job_call: dict, namespace: dict, failed: str | None, call) -> dict:
    """One call's result line: {"value": encoded} or {"error": feedback[, "not_implemented": true]}."""
    name = job_call["function"]
    fn = namespace.get(name)
    if failed or not callable(fn):
        return {"error": failed or f"no function {name} in the notebook: keep its name and its def line"}
    try:
        args = decode(job_call["args"], torch=job_call["torch"])
        return {"value": encode(call(fn, job_call["hint"], *args, banned=tuple(job_call["banned"])))}
    except NotImplementedError as err:
        return {"error": str(err), "not_implemented": True}
    except AssertionError as err:
        return {"error": str(err)}
    except TypeError as err:
        return {"error": f"{name} returned {err}, not a number, array or tuple"}


if __name__ == "__main__":
    _main(*sys.argv[1:3])
