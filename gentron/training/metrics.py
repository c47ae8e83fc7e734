"""The loss log (one JSON object per line) and its plot, written by the main process only."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class LossLog:
    """``loss.jsonl`` in the run folder; on resume, lines past the resumed step are dropped so the log
    reads like the uninterrupted run."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        self.entries: list[dict[str, Any]] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    continue
                if entry.get("step", 0) <= resume_step:
                    self.entries.append(entry)
        _atomic_write(path, "".join(json.dumps(e) + "\n" for e in self.entries))

    def append(self, **entry: Any) -> None:
        self.entries.append(entry)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def plot(self, path: Path, title: str = "") -> None:
        """A loss-curve PNG (with a running mean), replaced atomically."""
        if not self.entries:
            return
        import matplotlib

        matplotlib.use("Agg")  # no display on training machines
        import matplotlib.pyplot as plt

        steps = [e["step"] for e in self.entries]
        losses = [e["loss"] for e in self.entries]
        window = max(1, len(losses) // 20)
        smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                  for i in range(len(losses))]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.92)  # fixed margins: tight_layout costs ~0.5 s
        ax.plot(steps, losses, alpha=0.35, label="loss")
        ax.plot(steps, smooth, label=f"running mean ({window})")
        ax.set_xlabel("step")
        ax.set_ylabel("diffusion loss (eps MSE)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        tmp = path.with_name(f".tmp-{path.name}")
        fig.savefig(tmp, format="png")
        plt.close(fig)
        os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)
