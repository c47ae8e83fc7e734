"""One loss curve across training stages run one after another (each stage's loss.jsonl), for docs/.

    python scripts/plot_stage_losses.py OUT/images OUT/videos --out docs/loss_gpu_h200.png
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("stages", nargs="+", type=Path, help="stage folders, in the order they ran")
p.add_argument("--out", type=Path, required=True)
args = p.parse_args()
fig, ax = plt.subplots(figsize=(7, 3.5))
offset = 0
for stage in args.stages:
    rows = [json.loads(line) for line in (stage / "loss.jsonl").read_text().splitlines() if line.strip()]
    ax.plot([offset + r["step"] for r in rows], [r["loss"] for r in rows], label=f"{stage} ({rows[-1]['step']} steps)")
    offset += rows[-1]["step"]
ax.set_xlabel("step (stages back to back)")
ax.set_ylabel("training loss (Min-SNR weighted)")
ax.legend(fontsize=7)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(args.out, dpi=100)
print(args.out)
