"""The ablation report: it reads each run's CompBench table, weighs gaps against their noise, and says
plainly when our result agrees with the paper, disagrees, or cannot tell."""
import json

import pytest

from gentron.evaluation.ablations import ABLATIONS, main, standard_error, verdict


def image_table(correct: float, n: int = 40) -> dict:
    row = {"correct": correct, "attribute": correct, "colour": correct, "shape": correct, "dynamic_degree": 0.0,
           "n": n}
    return {"single": row, "relation": {**row, "spatial": correct}, "count": row}


def video_table(score: float, n: int = 20) -> dict:
    row = {k: score for k in ("correct", "attribute", "direction", "objects_every_frame", "temporal_consistency")}
    return {kind: {**row, "dynamic_degree": 0.05, "n": n} for kind in ("video_single", "video_pair")}


def write_run(root, run, table, eval_dir="eval", losses=None, video=False):
    (root / run / eval_dir).mkdir(parents=True, exist_ok=True)
    if losses is not None:
        (root / run / "loss").mkdir(exist_ok=True)
        held = {"loss": sum(losses) / len(losses), "loss_se": 0.001, "text_gain": 0.1, "per_sample": {"loss": losses}}
        (root / run / "loss" / "loss.json").write_text(json.dumps({"videos" if video else "images": held}))
    (root / run / eval_dir / "results.json").write_text(json.dumps({"table": table}))
    (root / run / "loss.jsonl").write_text("".join(json.dumps({"step": 10 * i, "loss": 0.1 / i, "seconds": i})
                                                   + "\n" for i in range(1, 7)))


def test_standard_error_shrinks_with_prompts_and_is_never_zero():
    assert standard_error(50, 400) < standard_error(50, 40)
    assert standard_error(0, 40) > 0 and standard_error(100, 40) > 0


def test_report_verdicts(tmp_path, capsys):
    scores = {"t2i_adaln_clip_t5": 10, "t2i_cross_clip_t5": 40,  # cross-attention far ahead: agrees
              "t2i_cross_clip": 39, "t2i_cross_t5": 20,  # CLIP alone close to CLIP+T5: within noise
              "t2i_cross_clip_t5_xs": 70}  # the smaller model far ahead: disagrees
    base = [0.10, 0.12, 0.08, 0.11, 0.09, 0.10, 0.13, 0.07]
    losses = {"t2i_adaln_clip_t5": [x + 0.02 for x in base],  # worse on every sample: agrees
              "t2i_cross_clip_t5": base,
              "t2i_cross_clip": [x - 0.01 for x in base],  # better on every sample: disagrees
              "t2i_cross_t5": [x + 0.03 for x in base],
              "t2i_cross_clip_t5_xs": [x + (0.01 if i % 2 else -0.01) for i, x in enumerate(base)]}  # noise
    for run, s in scores.items():
        write_run(tmp_path, run, image_table(s), losses=losses[run])
    write_run(tmp_path, "t2v_videos_only", video_table(30))
    write_run(tmp_path, "t2v_motion_free", video_table(30))
    assert main([str(tmp_path), "--out", str(tmp_path / "docs" / "ablations.md")]) == 0  # one MFG eval missing
    text = (tmp_path / "docs" / "ablations.md").read_text()
    assert (tmp_path / "docs" / "ablations.png").stat().st_size > 5000 and "![ablations](ablations.png)" in text
    sections = text.split("## ")[1:]
    assert "CompBench: agrees with the paper: cross-attention 40.0 vs adaLN-Zero 10.0" in sections[0]
    assert "within noise: CLIP+T5 40.0 vs CLIP 39.0" in sections[1]
    assert "disagrees with the paper: S/2 40.0 vs XS/2 70.0" in sections[2]
    assert "not run yet" in sections[3]
    assert "held-out loss: agrees with the paper: cross-attention 0.10000 vs adaLN-Zero 0.12000" in sections[0]
    assert "held-out loss: disagrees with the paper: CLIP+T5 0.10000 vs CLIP 0.09000" in sections[1]
    assert "held-out loss: within noise: S/2" in sections[2]
    assert "held-out loss: not measured yet" in sections[3]
    assert "| adaLN-Zero | 10.0 ±" in sections[0]
    assert "| 0.0290 |" in sections[0]  # the final training loss: the mean of the last 5 log lines
    assert "Text conditioning" in capsys.readouterr().out


def test_verdict_needs_every_variant():
    assert verdict(ABLATIONS[0], []) == "not run yet"
    with pytest.raises(StopIteration):  # a variant list without the paper's winner is a programming error
        verdict(ABLATIONS[0], [{"label": "x", "score": 1, "se": 1}, {"label": "y", "score": 1, "se": 1}])
