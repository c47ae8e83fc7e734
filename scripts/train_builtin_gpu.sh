#!/usr/bin/env bash
# Train the built-in model's transformer on one CUDA GPU, stage after stage, each for a fixed time, then ship
# the last stage's EMA weights in bf16. This is how assets/gentron-shapes was trained (docs/training.md).
#
#   STAGES="images videos" bash scripts/train_builtin_gpu.sh          # images, then videos, from the shipped model
#   STAGES="t2i t2i_more" STAGE_SECONDS=250 bash scripts/train_builtin_gpu.sh   # a fresh S/2: t2i, then t2i_more
#   STAGES="images_decay videos_decay" INIT=assets/gentron-shapes DEST=runs/builtin_gpu8 bash scripts/train_builtin_gpu.sh
#                                                                     # images_decay, videos_decay: each ends in an LR cooldown
#
# Each stage stops itself after its config's time_limit (STAGE_SECONDS overrides it for every stage), checkpoints and
# writes final/; the next stage starts from that final/. Run again, a stage resumes from its checkpoint.
# EXTRA adds trainer flags to every stage (e.g. EXTRA="--set data_workers=2 --set batch_size=8" for a CPU dry run).
set -uo pipefail
STAGES=${STAGES:-images videos}
DEST=${DEST:-runs/builtin_gpu2}
SECONDS_EACH=${STAGE_SECONDS:-}
EXTRA=${EXTRA:-}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.

config_of() {  # stage name -> config
  case "$1" in
    t2i) echo configs/builtin_t2i_gpu.yaml ;; t2i_more) echo configs/builtin_t2i_gpu_more.yaml ;;
    t2v) echo configs/builtin_t2v_gpu.yaml ;; images) echo configs/builtin_images_gpu.yaml ;;
    videos) echo configs/builtin_videos_gpu.yaml ;;
    images_decay) echo configs/builtin_images_decay_gpu.yaml ;; videos_decay) echo configs/builtin_videos_decay_gpu.yaml ;;
    *) echo "unknown stage $1: choose from t2i t2i_more t2v images videos images_decay videos_decay" >&2; return 2 ;;
  esac
}

mkdir -p "$DEST"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
init=${INIT:-}
for name in $STAGES; do
  config=$(config_of "$name") || exit 2
  out="$DEST/$name"
  args=(--config "$config" --output-dir "$out")
  [ -n "$init" ] && args+=(--init-from "$init")
  [ -n "$SECONDS_EACH" ] && args+=(--set "time_limit=$SECONDS_EACH")
  echo "== $name: $config -> $out ($(date -u +%T))"
  # shellcheck disable=SC2086
  if ! python -m gentron.training "${args[@]}" $EXTRA > "$DEST/$name.log" 2>&1; then
    echo "!! $name failed:"; tail -n 30 "$DEST/$name.log"; exit 1
  fi
  echo "== $name done ($(date -u +%T)); last log lines:"; tail -n 2 "$out/loss.jsonl"
  init="$out/final"
done
python -m gentron.training.assemble ship --from "$init" --out "$DEST/shipped" || exit 1
echo "== done: $DEST/shipped"
