#!/usr/bin/env bash
# The oracle study, one step at a time, each committed as it finishes (`make results` starts this in
# the background; rerunning resumes where the last run ended: what is stored at the right learning
# rate is read, not trained again).
# Order: trace.npz of every stored sweep (no training); then one pair at a time, the cheaper model
# first: the pair's learning rates (block training, LoRA, full fine-tuning), then each of its seeds'
# missing or stale runs. A pair whose rate changed waits for its reruns as one unit, so at most one
# pair is between learning rates at any commit; then the learning-rate sensitivity; last, once every planned
# sweep is current, the summary, the README's verdict and chapter 7 (nothing is summarised before).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=book/results
PAIRS=${PAIRS:-"bbc-news:smollm2-135m wordnet:smollm2-135m kjv:smollm2-135m
bbc-news:gemma3-270m wordnet:gemma3-270m kjv:gemma3-270m"}
study() { $PY -m freezelab.study --scale full --out "$OUT" --no-collect "$@"; }
commit() {  # retry while another process holds the index
    for _ in 1 2 3 4 5 6; do
        git add "$OUT/runs" "$OUT/scale.json" 2>/dev/null && git commit -qm "$1" -- "$OUT/runs" "$OUT/scale.json" && return 0
        git diff --quiet HEAD -- "$OUT/runs" "$OUT/scale.json" && [ -z "$(git ls-files -o --exclude-standard "$OUT/runs")" ] \
            && return 0  # nothing new to commit
        sleep 10
    done
}
step() {  # step MESSAGE ARGS...: run the study with ARGS, commit what it stored
    local message=$1; shift
    echo "== $(date -u +%FT%TZ) $message"
    local t0=$SECONDS
    if study "$@"; then
        echo "== $(date -u +%FT%TZ) done in $(( (SECONDS - t0) / 60 )) min: $message"; commit "Study: $message"
    else
        echo "!! $message failed"; commit "Study (partial): $message"
    fi
}
if ls "$OUT"/runs/*/*/seed*/sweep.json >/dev/null 2>&1 && [ "$(ls "$OUT"/runs/*/*/seed*/sweep.json | wc -l)" -gt \
        "$(ls "$OUT"/runs/*/*/seed*/trace.npz 2>/dev/null | wc -l)" ]; then
    step "trace.npz of every stored sweep (what a rule reads; no training)" --retrace
fi
for pair in $PAIRS; do
    IFS=: read -r data model <<< "$pair"
    step "learning rates of $model on $data" --lr-only --models "$model" --datasets "$data"
    seeds="0 1 2"; [ "$data" = kjv ] && seeds=0  # runner.StudyScale.seeds_for
    for seed in $seeds; do
        step "$model on $data, seed $seed: missing or stale runs at the picked rates" --models "$model" \
            --datasets "$data" --seeds "$seed"
    done
done
lr_done=$(grep -l '"complete": true' "$OUT"/runs/smollm2-135m/bbc-news/lr-sensitivity/*/sweep.json 2>/dev/null | wc -l)
if [ "$lr_done" -lt 2 ]; then  # both learning rates either side of the chosen one
    step "learning-rate sensitivity of smollm2-135m on bbc-news" --lr-sensitivity --models smollm2-135m \
        --datasets bbc-news
fi
# Every planned sweep current: the summary, the book's generated files, the recommendation, the README's
# verdict, then chapter 7 (it shows the verdict) and the Colab edition made from it.
generated="$OUT README.md freezelab/recommendation.json"
if $PY -m freezelab.study --scale full --out "$OUT" --collect --if-complete; then
    git add $generated && git commit -qm "Study: summary, verdict and README from every sweep at its pair's picked rates" \
        -- $generated
    if make notebooks NB=notebooks/07_does_it_work.ipynb && make colab; then
        git add notebooks && git commit -qm "Chapter 7 re-executed with the study's verdict; Colab edition regenerated" -- notebooks
    fi
fi
echo "== $(date -u +%FT%TZ) done"
