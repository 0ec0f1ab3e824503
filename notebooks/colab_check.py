#!/usr/bin/env python
"""Prove that the Colab edition's install cells name every dependency they need (`make colab-check`).

    python notebooks/colab_check.py [--out runs/colab-check] [--keep]

1. Builds the project's wheel.
2. Creates a fresh virtual environment holding only Python (and pip).
3. Pre-installs what a Colab runtime already ships and the install cells therefore do not: torch
   (pinned to torch==2.13.0, the CPU build on this machine; an unpinned torch would pull a
   multi-GB CUDA build) and ipykernel (Colab's kernel, used here to execute the notebooks).
4. Runs exactly the ``%pip install`` commands of each checked notebook's install cell (its first
   code cell, guarded by ``"google.colab" in sys.modules``), with the local wheel in place of the
   git URL.
5. Executes the Colab edition (``notebooks/colab/``, what the book's Colab badges open; written by
   ``notebooks/make_colab.py``) of chapter 01 and of assignment 1 (instructor: the solution) at ci scale
   (FREEZELAB_SCALE=ci) in that environment, from a scratch folder, with the hub switched off.

Exits 0 when both notebooks run to the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = [REPO / "notebooks" / "colab" / "01_latent_spaces.ipynb",
             REPO / "notebooks" / "colab" / "instructor" / "assignments" / "01_cosine_lens.ipynb"]
GIT_URL = "git+https://github.com/freezelab/freezelab"
PREINSTALLED = ["torch==2.13.0", "ipykernel"]  # shipped by Colab, so no install cell names them
KERNEL = "freezelab-colab-check"


def install_commands(notebook: Path) -> list[list[str]]:
    """The arguments of every ``%pip install`` line of the notebook's install cell (its first code cell)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = next("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                for c in cells if c["cell_type"] == "code")
    if "google.colab" not in code:
        raise SystemExit(f"{notebook.name}: its first code cell is not the Colab install cell")
    commands = [shlex.split(m.group(1)) for m in re.finditer(r"^\s*%pip install (.+)$", code, re.M)]
    if not commands:
        raise SystemExit(f"{notebook.name}: no %pip install line in its install cell")
    return commands


def with_wheel(args: list[str], wheel: Path) -> list[str]:
    """The pip arguments with the local wheel in place of the git URL ("freezelab[x] @ file:///...whl")."""
    return [a.replace(GIT_URL, wheel.resolve().as_uri()) for a in args]


def run(cmd: list[str], **kw) -> None:
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "colab-check")
    parser.add_argument("--keep", action="store_true", help="keep the virtual environment afterwards")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    (out / "dist").mkdir(parents=True)

    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out / "dist", REPO])
    wheel = next((out / "dist").glob("freezelab-*.whl"))
    venv = out / "venv"
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter itself, not this venv
    run([base, "-m", "venv", venv])
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", *PREINSTALLED])
    for notebook in NOTEBOOKS:
        for command in install_commands(notebook):
            run([py, "-m", "pip", "install", *with_wheel(command, wheel)])
    run([py, "-m", "ipykernel", "install", "--prefix", venv, "--name", KERNEL])

    import nbformat
    from nbclient import NotebookClient

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(FREEZELAB_SCALE="ci", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg",
               JUPYTER_PATH=str(venv / "share" / "jupyter"))
    os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]  # where the kernel manager finds the fresh kernel
    for notebook in NOTEBOOKS:
        scratch = out / "run" / notebook.stem
        scratch.mkdir(parents=True)
        nb = nbformat.read(notebook, as_version=4)
        print(f"executing {notebook.relative_to(REPO)} in the fresh environment (FREEZELAB_SCALE=ci)", flush=True)
        t = time.perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name=KERNEL, resources={"metadata": {"path": str(scratch)}}).execute(
            env=env)
        nbformat.write(nb, scratch / notebook.name)
        print(f"  ran to the end in {time.perf_counter() - t:.0f} s", flush=True)
    if not args.keep:
        shutil.rmtree(venv)
    print(f"colab-check passed in {time.perf_counter() - start:.0f} s: the install cells of "
          + ", ".join(n.name for n in NOTEBOOKS) + " are complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
