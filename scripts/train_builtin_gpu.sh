#!/usr/bin/env bash
# Train the built-in model's transformer on one CUDA GPU: text-to-image, then text-to-video, each for a
# fixed time, then ship the result in bf16. This is how assets/gentron-shapes was trained (docs/training.md).
#
#   T2I_SECONDS=240 T2V_SECONDS=140 bash scripts/train_builtin_gpu.sh
#   STAGES=t2i_more INIT=runs/builtin_gpu/t2i/final T2I_SECONDS=170 bash scripts/train_builtin_gpu.sh
#
# Each stage runs under `timeout` with resumable checkpoints; when time is up it is finished from its last
# checkpoint (a resume with --steps N writes final/ from the EMA weights). EXTRA adds trainer flags to both
# stages (e.g. EXTRA="--set data_workers=2 --set batch_size=8 --set checkpoint_every=10" for a CPU dry run).
set -uo pipefail
T2I_SECONDS=${T2I_SECONDS:-240}
T2V_SECONDS=${T2V_SECONDS:-140}
DEST=${DEST:-runs/builtin_gpu}
STAGES=${STAGES:-all}  # all (t2i then t2v), or one stage: t2i, t2i_more (more T2I from INIT) or t2v (from INIT)
EXTRA=${EXTRA:-}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.

last_step() {  # the step of the newest complete checkpoint under $1, or 0
  python -c "import sys, pathlib; from gentron.training.checkpoint import latest_checkpoint as l; \
p = l(pathlib.Path(sys.argv[1])); print(int(p.name.split('_')[-1]) if p else 0)" "$1/checkpoints" || echo 0
}

stage() {  # name config seconds init
  local name=$1 config=$2 seconds=$3 init=$4 out="$DEST/$1" rc steps
  echo "== $name: $config for ${seconds}s -> $out"
  # shellcheck disable=SC2086
  timeout "$seconds" python -m gentron.training --config "$config" --output-dir "$out" --init-from "$init" $EXTRA \
    > "$DEST/$name.log" 2>&1
  rc=$?
  if [ "$rc" -ne 124 ] && [ "$rc" -ne 0 ]; then
    echo "!! $name failed (exit $rc):"; tail -n 30 "$DEST/$name.log"; exit "$rc"
  fi
  steps=$(last_step "$out")
  if [ "$steps" -eq 0 ]; then echo "!! $name reached no checkpoint in ${seconds}s"; tail -n 30 "$DEST/$name.log"; exit 1; fi
  # shellcheck disable=SC2086
  python -m gentron.training --config "$config" --output-dir "$out" --init-from "$init" $EXTRA --steps "$steps" \
    >> "$DEST/$name.log" 2>&1 || { echo "!! finishing $name failed"; tail -n 30 "$DEST/$name.log"; exit 1; }
  echo "== $name: $steps steps; last losses:"; tail -n 3 "$out/loss.jsonl"
}

mkdir -p "$DEST"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
case "$STAGES" in
  t2i) stage t2i configs/builtin_t2i_gpu.yaml "$T2I_SECONDS" "${INIT:-assets/gentron-shapes}"; last=t2i ;;
  t2i_more) stage t2i_more configs/builtin_t2i_gpu_more.yaml "$T2I_SECONDS" "${INIT:-$DEST/t2i/final}"; last=t2i_more ;;
  t2v) stage t2v configs/builtin_t2v_gpu.yaml "$T2V_SECONDS" "${INIT:-$DEST/t2i/final}"; last=t2v ;;
  all) stage t2i configs/builtin_t2i_gpu.yaml "$T2I_SECONDS" assets/gentron-shapes
       stage t2v configs/builtin_t2v_gpu.yaml "$T2V_SECONDS" "$DEST/t2i/final"; last=t2v ;;
  *) echo "STAGES must be all, t2i, t2i_more or t2v, got $STAGES"; exit 2 ;;
esac
python -m gentron.training.assemble ship --from "$DEST/$last/final" --out "$DEST/shipped" || exit 1
echo "== done: $DEST/shipped"
