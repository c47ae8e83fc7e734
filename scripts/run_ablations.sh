#!/usr/bin/env bash
# The paper's ablations at our scale (issue 4): train each configs/ablations/*.yaml, evaluate it with the
# held-out denoising loss and the Shapes World CompBench, then write docs/ablations.md and its plot. Every
# step resumes: a stage continues from its last checkpoint and a finished evaluation is not redone, so
# rerun this after an interruption.
#   bash scripts/run_ablations.sh            # all, in the order below (about 75 minutes on the 2-core CPU)
#   ONLY="t2i_cross_clip_t5 t2i_adaln_clip_t5" bash scripts/run_ablations.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=.
T2I="t2i_cross_clip_t5 t2i_adaln_clip_t5 t2i_cross_clip t2i_cross_t5 t2i_cross_clip_t5_xs"
T2V="t2v_motion_free t2v_videos_only"
IMAGES=${IMAGES:-120}   # image prompts per T2I model (40 per category)
VIDEOS=${VIDEOS:-40}    # video prompts per T2V model
LOSS_IMAGES=${LOSS_IMAGES:-512}  # held-out samples for the denoising loss (images; T2V models: videos)
LOSS_VIDEOS=${LOSS_VIDEOS:-128}
evaluate() {  # name out_dir extra-args...
  local name=$1 out=$2; shift 2
  if [[ ! -f $out/results.json ]]; then
    python -m gentron eval --model "runs/ablations/$name/final" --suite compbench --out-dir "$out" "$@"
  fi
}
for name in ${ONLY:-$T2I $T2V}; do
  if [[ ! -d runs/ablations/$name/final ]]; then
    python -m gentron train --config "configs/ablations/$name.yaml"
  fi
  if [[ ! -f runs/ablations/$name/loss/loss.json ]]; then  # held-out loss: paired across models, moves early
    if [[ $name == t2i_* ]]; then n=(--n-images "$LOSS_IMAGES" --n-videos 0); else n=(--n-images 0 --n-videos "$LOSS_VIDEOS"); fi
    python -m gentron eval --suite loss --model "runs/ablations/$name/final" "${n[@]}" --seed 11 \
      --out-dir "runs/ablations/$name/loss"
  fi
  if [[ $name == t2i_* ]]; then
    evaluate "$name" "runs/ablations/$name/eval" --n-images "$IMAGES" --n-videos 0 --seed 7
  else
    evaluate "$name" "runs/ablations/$name/eval" --n-images 0 --n-videos "$VIDEOS" --seed 8 --motion-guidance 1.0
    if [[ $name == t2v_motion_free ]]; then  # MFG above plain CFG, as the paper samples (λM 1.0-1.3)
      evaluate "$name" "runs/ablations/$name/eval_lm1.3" --n-images 0 --n-videos "$VIDEOS" --seed 8 --motion-guidance 1.3
    fi
  fi
done
python -m gentron.evaluation.ablations runs/ablations --out docs/ablations.md
