#!/usr/bin/env bash
# Does rotary spatial attention let the model learn which side is which? An A/B for one GPU: two fresh S/2
# text-to-image models on the built-in VAE and towers, the same data, seed and time, one with `rope: true`
# (GenTronConfig.rope), then 300 CompBench images each and the sort of their relation images by axis and side
# (research/travel_heading.py). Every model so far reads the axis (~85%) and not the side (chance):
# docs/training.md, "The axis is read, the sign is not".
#
#   SECONDS_EACH=240 DEST=runs/rope_ab bash research/rope_ab_gpu.sh
#
# Two 240 s arms plus loading, shipping and evaluating: about 11-12 minutes of one GPU (an estimate).
#
# Each arm is scripts/train_builtin_gpu.sh's t2i step (configs/builtin_t2i_gpu.yaml), so a run resumes as that does.
set -uo pipefail
DEST=${DEST:-runs/rope_ab}
SECONDS_EACH=${SECONDS_EACH:-240}
DEVICE=${DEVICE:-cuda}
N_IMAGES=${N_IMAGES:-300}
# EXTRA: more trainer flags for both arms, e.g. a CPU dry run:
#   EXTRA="--set batch_size=8 --set data_workers=1 --set warmup=1" SECONDS_EACH=15 N_IMAGES=6 DEVICE=cpu bash research/rope_ab_gpu.sh
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.
for arm in base rope; do
  extra="${EXTRA:-} --set seed=40"
  [ "$arm" = rope ] && extra="$extra --set rope=true"
  STAGES=t2i DEST="$DEST/$arm" STAGE_SECONDS="$SECONDS_EACH" EXTRA="$extra" bash scripts/train_builtin_gpu.sh || exit 1
  python -m gentron eval --suite compbench --model "$DEST/$arm/shipped" --device "$DEVICE" --n-images "$N_IMAGES" \
    --n-videos 0 --seed 3 --out-dir "$DEST/$arm/eval" > "$DEST/$arm/eval.log" 2>&1 || { tail -n 20 "$DEST/$arm/eval.log"; exit 1; }
  echo "== $arm"; cat "$DEST/$arm/eval/table.md"
done
python research/travel_heading.py "$DEST/base/eval" "$DEST/rope/eval"
python -m gentron.evaluation.paired "$DEST/base/eval" "$DEST/rope/eval"
