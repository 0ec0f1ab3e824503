#!/usr/bin/env bash
# The oracle study, one step at a time, each committed as it finishes (`make results` starts this in
# the background; rerunning resumes where the last run ended: what is stored at the right learning
# rate is read, not trained again).
# Order: trace.npz of every stored sweep (no training); the learning rates of every pair (block
# training and LoRA first, then full fine-tuning); then the sweeps' missing or stale runs, cheap
# families first: full fine-tuning, then LoRA, then everything (the grid); the learning-rate
# sensitivity last. Within each stage, seed 0 of every pair first.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=book/results
PAIRS=${PAIRS:-"bbc-news:smollm2-135m bbc-news:gemma3-270m wordnet:smollm2-135m wordnet:gemma3-270m
kjv:smollm2-135m kjv:gemma3-270m"}
UNITS=${UNITS:-"bbc-news:smollm2-135m:0 bbc-news:gemma3-270m:0 wordnet:smollm2-135m:0 wordnet:gemma3-270m:0
kjv:smollm2-135m:0 kjv:gemma3-270m:0
bbc-news:smollm2-135m:1 bbc-news:gemma3-270m:1 wordnet:smollm2-135m:1 wordnet:gemma3-270m:1
bbc-news:smollm2-135m:2 bbc-news:gemma3-270m:2 wordnet:smollm2-135m:2 wordnet:gemma3-270m:2"}
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
for families in blocks,lora full; do
    for pair in $PAIRS; do
        IFS=: read -r data model <<< "$pair"
        step "learning rates ($families) of $model on $data" --lr-only --families "$families" \
            --models "$model" --datasets "$data"
    done
done
for families in full full,lora blocks,lora,full; do
    for unit in $UNITS; do
        IFS=: read -r data model seed <<< "$unit"
        step "$model on $data, seed $seed: runs of $families at the picked rates" --families "$families" \
            --models "$model" --datasets "$data" --seeds "$seed"
    done
done
lr_done=$(grep -l '"complete": true' "$OUT"/runs/smollm2-135m/bbc-news/lr-sensitivity/*/sweep.json 2>/dev/null | wc -l)
if [ "$lr_done" -lt 2 ]; then  # both learning rates either side of the chosen one
    step "learning-rate sensitivity of smollm2-135m on bbc-news" --lr-sensitivity --models smollm2-135m \
        --datasets bbc-news
fi
echo "== $(date -u +%FT%TZ) done"
