#!/usr/bin/env bash
# The oracle study, one model x data set x seed at a time, each committed as it finishes
# (`make results` starts this in the background; rerunning resumes where the last run ended).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=book/results
# Seed 0 of every model x data set first (the knee study's held-out pairs), then the
# learning-rate sensitivity, then the other seeds.
UNITS=${UNITS:-"bbc-news:smollm2-135m:0 bbc-news:gemma3-270m:0 wordnet:smollm2-135m:0 wordnet:gemma3-270m:0
kjv:smollm2-135m:0 kjv:gemma3-270m:0 lr-sensitivity
bbc-news:smollm2-135m:1 bbc-news:gemma3-270m:1 wordnet:smollm2-135m:1 wordnet:gemma3-270m:1
bbc-news:smollm2-135m:2 bbc-news:gemma3-270m:2 wordnet:smollm2-135m:2 wordnet:gemma3-270m:2"}
commit() {  # retry while another process holds the index
    for _ in 1 2 3 4 5 6; do
        git add "$OUT/runs" "$OUT/scale.json" 2>/dev/null && git commit -qm "$1" -- "$OUT/runs" "$OUT/scale.json" && return 0
        sleep 10
    done
}
for unit in $UNITS; do
    if [ "$unit" = lr-sensitivity ]; then
        lr_done=$(grep -l '"complete": true' "$OUT"/runs/smollm2-135m/bbc-news/lr-sensitivity/*/sweep.json 2>/dev/null | wc -l)
        [ "$lr_done" -ge 2 ] && continue  # both learning rates either side finished in an earlier session
        echo "== $(date -u +%FT%TZ) learning-rate sensitivity: smollm2-135m / bbc-news"
        $PY -m freezelab.study --scale full --out "$OUT" --lr-sensitivity --models smollm2-135m --datasets bbc-news \
            && commit "Study: learning-rate sensitivity of smollm2-135m on bbc-news" \
            || { echo "!! learning-rate sensitivity failed"; commit "Study (partial): learning-rate sensitivity"; }
        continue
    fi
    IFS=: read -r data model seed <<< "$unit"
    if grep -q '"complete": true' "$OUT/runs/$model/$data/seed$seed/sweep.json" 2>/dev/null; then
        continue  # finished in an earlier session: no model load, cache or summary to redo
    fi
    echo "== $(date -u +%FT%TZ) $model / $data / seed $seed"
    if $PY -m freezelab.study --scale full --out "$OUT" --models "$model" --datasets "$data" --seeds "$seed"; then
        commit "Study: $model on $data, seed $seed"
    else
        echo "!! $model / $data / seed $seed failed"; commit "Study (partial): $model on $data, seed $seed"
    fi
done
echo "== $(date -u +%FT%TZ) done"
