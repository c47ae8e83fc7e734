#!/usr/bin/env bash
# The paper's claims at our scale: train each arm of configs/ablations/ (the T2I arms, then the T2V arms from their
# parents), judge it by the held-out loss and the Shapes World CompBench, copy the small results into
# docs/ablations/ and write docs/ablations.md with its plots. Every step resumes: an arm continues from its last
# checkpoint, a finished evaluation is not redone, so rerun this after any stop.
#   bash scripts/run_ablations.sh                                   # every arm, in the order below
#   ONLY="t2i_ref t2i_s" bash scripts/run_ablations.sh              # some arms (their parents must exist)
#   PAIRS=1 bash scripts/run_ablations.sh    # two arms at a time, one thread each: on 2 cores an XS/2 arm keeps
#                                            # about one busy, so a pair trains in the time of one (docs/evaluation.md)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=.
T2I="t2i_ref t2i_adaln t2i_pooled t2i_clip t2i_t5 t2i_shift1 t2i_shift4 t2i_s t2i_s_deep"
T2V="t2v_ref t2v_videos_only t2v_shift1 t2v_shift4"
IMAGES=${IMAGES:-300}              # image prompts per T2I arm (100 a category), the same prompts for every arm
VIDEOS=${VIDEOS:-100}              # video prompts per T2V arm
CURVE_VIDEOS=${CURVE_VIDEOS:-60}   # videos at each λM of the motion-guidance curve
TEXT_GUIDANCE=${TEXT_GUIDANCE:-4.5}  # one λT for every arm: flow models count best at 3.5-4.5 (docs/training.md)
RUNS=runs/ablations
evaluate() {  # arm out_dir extra-args...
  local arm=$1 out=$2; shift 2
  if [[ ! -f $out/results.json ]]; then
    python -m gentron eval --model "$RUNS/$arm/final" --suite compbench --text-guidance "$TEXT_GUIDANCE" \
      --out-dir "$out" "$@"
  fi
}
run_arm() {  # train, then judge, one arm
  local arm=$1
  if [[ ! -d $RUNS/$arm/final ]]; then
    python -m gentron train --config "configs/ablations/$arm.yaml"
  fi
  if [[ ! -f $RUNS/$arm/loss/loss.json ]]; then  # held-out loss: the same samples, noise and σ for every arm
    if [[ $arm == t2i_* ]]; then n=(--n-images 512 --n-videos 0); else n=(--n-images 0 --n-videos 128); fi
    python -m gentron eval --suite loss --model "$RUNS/$arm/final" "${n[@]}" --seed 11 --out-dir "$RUNS/$arm/loss"
  fi
  if [[ $arm == t2i_* ]]; then
    evaluate "$arm" "$RUNS/$arm/eval" --n-images "$IMAGES" --n-videos 0 --seed 7
  else
    evaluate "$arm" "$RUNS/$arm/eval" --n-images 0 --n-videos "$VIDEOS" --seed 8 --motion-guidance 1.0
  fi
  if [[ $arm == t2v_ref ]]; then  # MFG above plain CFG, as the paper samples it; then the whole λM curve
    evaluate "$arm" "$RUNS/$arm/eval_lm1.3" --n-images 0 --n-videos "$VIDEOS" --seed 8 --motion-guidance 1.3
    if [[ ! -f $RUNS/$arm/sweep_motion/sweep.json ]]; then
      python -m gentron eval --model "$RUNS/$arm/final" --suite sweep-motion --values 0,0.5,1,1.3,1.5,2,3 \
        --n-videos "$CURVE_VIDEOS" --seed 8 --text-guidance "$TEXT_GUIDANCE" --out-dir "$RUNS/$arm/sweep_motion"
    fi
  fi
}
arms=(${ONLY:-$T2I $T2V})
i=0
while (( i < ${#arms[@]} )); do
  a=${arms[i]} b=${arms[i+1]:-}
  # pairs of one kind only: a T2V arm starts from a T2I arm, and every T2I arm comes first
  if [[ ${PAIRS:-0} == 1 && -n $b && ${a%%_*} == "${b%%_*}" ]]; then
    OMP_NUM_THREADS=1 run_arm "$a" & pa=$!
    OMP_NUM_THREADS=1 run_arm "$b" & pb=$!
    wait $pa && wait $pb
    i=$((i + 2))
  else
    run_arm "$a"
    i=$((i + 1))
  fi
done
python -m gentron.evaluation.ablations collect "$RUNS" docs/ablations
python -m gentron.evaluation.ablations report docs/ablations --out docs/ablations.md
