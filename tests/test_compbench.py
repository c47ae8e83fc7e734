"""The CompBench suite: balanced, reproducible prompts; a table that rewards right pictures only."""
import json

import numpy as np
import pytest
import torch

from gentron.cli import main
from gentron.data.shapes import parse_caption, render
from gentron.evaluation.checker import check
from gentron.evaluation.compbench import draw_prompts, markdown_table, summarise


def test_prompts_balanced_and_reproducible():
    jobs = draw_prompts(30, 10, seed=4)
    assert jobs == draw_prompts(30, 10, seed=4) and jobs != draw_prompts(30, 10, seed=5)
    kinds = [j["kind"] for j in jobs]
    assert kinds.count("single") == kinds.count("relation") == kinds.count("count") == 10
    assert kinds.count("video_single") == kinds.count("video_pair") == 5
    assert all(parse_caption(j["prompt"]).kind == j["kind"] for j in jobs)
    assert len({j["id"] for j in jobs}) == 40


def test_table_scores_true_renders_high_and_mismatched_ones_low():
    jobs = draw_prompts(12, 4, seed=1)
    rng = np.random.default_rng(0)
    right = [{"kind": j["kind"], "check": check(j["prompt"], render(parse_caption(j["prompt"]), 64, j["frames"], rng))}
             for j in jobs]
    # pictures of the next prompt in the list: mostly wrong for this one
    wrong = [{"kind": j["kind"], "check": check(j["prompt"], render(parse_caption(k["prompt"]), 64, j["frames"], rng))}
             for j, k in zip(jobs, jobs[3:] + jobs[:3])]
    good, bad = summarise(right), summarise(wrong)
    assert all(stats["correct"] == 100.0 for stats in good.values())
    assert np.mean([s["correct"] for s in bad.values()]) < 20
    assert "| relation |" in markdown_table(good)


@pytest.mark.slow  # end to end
def test_eval_cli_writes_results_and_table(tmp_path, tiny_pipeline_dir, capsys):
    """Plumbing on a tiny random model: files, JSON and table, not quality."""
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_pipeline_dir), "--resolution", "32", "--steps", "2", "--n-images", "3",
                 "--n-videos", "2", "--out-dir", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["results"]) == 5 and (out / "table.md").read_text().startswith("| category |")
    assert {r["kind"] for r in summary["results"]} == {"single", "relation", "count", "video_single", "video_pair"}
    assert "| category |" in capsys.readouterr().out


@pytest.mark.slow  # end to end
def test_sweeps_run_the_same_prompts_at_each_value(tmp_path, tiny_pipeline_dir, capsys):
    """Plumbing on a tiny random model: one CompBench run per value, the value in each file's settings."""
    from gentron.export import read_settings

    out = tmp_path / "sweep"
    assert main(["eval", "--suite", "sweep-motion", "--values", "0,2", "--model", str(tiny_pipeline_dir),
                 "--resolution", "32", "--steps", "2", "--n-videos", "2", "--out-dir", str(out)]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["parameter"] == "motion_guidance" and [p["value"] for p in sweep["points"]] == [0.0, 2.0]
    assert all(set(p["table"]) == {"video_single", "video_pair"} for p in sweep["points"])
    assert read_settings(out / "motion_guidance_2" / "v0000.mp4")["motion_guidance"] == 2.0
    a = json.loads((out / "motion_guidance_0" / "results.json").read_text())["results"]
    b = json.loads((out / "motion_guidance_2" / "results.json").read_text())["results"]
    assert [(r["prompt"], r["seed"]) for r in a] == [(r["prompt"], r["seed"]) for r in b]
    assert (out / "sweep.png").stat().st_size > 1000 and "| λM |" in capsys.readouterr().out

    out = tmp_path / "sweep_t"
    assert main(["eval", "--suite", "sweep-text", "--values", "1,7.5", "--model", str(tiny_pipeline_dir),
                 "--resolution", "32", "--steps", "2", "--n-images", "3", "--out-dir", str(out)]) == 0
    assert "| λT |" in (out / "sweep.md").read_text() and "correct: relation" in (out / "sweep.md").read_text()

    out = tmp_path / "sweep_s"
    assert main(["eval", "--suite", "sweep-steps", "--values", "1,2", "--model", str(tiny_pipeline_dir),
                 "--resolution", "32", "--n-images", "3", "--n-videos", "2", "--out-dir", str(out)]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["parameter"] == "steps" and [p["value"] for p in sweep["points"]] == [1, 2]
    assert all(set(p["table"]) == {"single", "relation", "count", "video_single", "video_pair"}
               for p in sweep["points"])
    assert read_settings(out / "steps_1" / "v0000.mp4")["steps"] == 1
    assert sweep["chosen"]["steps"] in (1, 2) and sweep["chosen"]["against"] == 2
    assert "fewest steps within 2 points of 2 steps" in (out / "sweep.md").read_text()


def test_fewest_steps_keeps_every_category_within_two_points():
    """The default step count is the fewest whose every category (and each video's direction and frames) stays
    within two points of the most steps'; the most steps always qualifies."""
    from gentron.evaluation.sweep import fewest_steps

    def point(steps, single, direction):
        return {"value": steps, "table": {"single": {"correct": single, "n": 10},
                                          "video_single": {"correct": 50.0, "direction": direction,
                                                           "objects_every_frame": 90.0, "n": 10}}}

    sweep = {"points": [point(25, 95.0, 80.0), point(4, 80.0, 80.0), point(8, 94.0, 77.0), point(12, 93.5, 78.5)]}
    assert fewest_steps(sweep) == {"steps": 12, "against": 25, "tolerance": 2.0}  # 8 loses 3 points of direction
    assert fewest_steps(sweep, tolerance=3.0)["steps"] == 8
    assert fewest_steps({"points": [point(25, 95.0, 80.0)]})["steps"] == 25


def test_sweep_values_errors_say_the_fix():
    import pytest

    from gentron.evaluation.sweep import parse_values

    assert parse_values(None, "sweep-motion") == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert parse_values("1, 7.5", "sweep-text") == [1.0, 7.5]
    with pytest.raises(ValueError, match="comma-separated numbers"):
        parse_values("1;2", "sweep-text")
    assert parse_values(None, "sweep-steps") == [4, 8, 12, 16, 25] and parse_values("4,8", "sweep-steps") == [4, 8]
    with pytest.raises(ValueError, match="whole step counts >= 1.*'4.5,8'"):
        parse_values("4.5,8", "sweep-steps")


@pytest.mark.slow  # end to end
def test_heldout_loss_is_paired_and_sees_the_text(tmp_path, tiny_pipeline_dir, capsys):
    """Same samples, noise and timesteps on every call; the text changes the prediction; a T2I model
    refuses videos with a clear error."""
    from gentron.evaluation.heldout_loss import heldout_samples, per_sample_losses, summarise_losses
    from gentron.loading import load_pipeline

    out = tmp_path / "loss"
    assert main(["eval", "--suite", "loss", "--model", str(tiny_pipeline_dir), "--resolution", "32",
                 "--n-images", "6", "--n-videos", "2", "--out-dir", str(out)]) == 0
    first = json.loads((out / "loss.json").read_text())
    assert main(["eval", "--suite", "loss", "--model", str(tiny_pipeline_dir), "--resolution", "32",
                 "--n-images", "6", "--n-videos", "2", "--out-dir", str(out)]) == 0
    assert json.loads((out / "loss.json").read_text()) == first  # deterministic: paired across models
    assert "text gain" in capsys.readouterr().out
    images = first["images"]
    assert images["n"] == 6 and sorted(images["per_sample"]["t"]) == [0, 166, 333, 500, 666, 833]
    assert sum(b["n"] for b in images["buckets"].values()) == 6
    pipe = load_pipeline(str(tiny_pipeline_dir))
    torch.manual_seed(0)
    for w in pipe.transformer.parameters():  # adaLN-Zero starts blind to the text: give it weights that see it
        torch.nn.init.normal_(w, std=0.2)
    seen = summarise_losses(per_sample_losses(pipe, *heldout_samples(4, 1, 32, 0), seed=0))
    assert seen["loss"] != seen["loss_empty"]  # the caption reaches the prediction
    if not pipe.transformer.config.temporal:
        import pytest
        with pytest.raises(ValueError, match="text-to-video model"):
            per_sample_losses(pipe, *heldout_samples(2, 8, 32, 0), seed=0)
    else:
        assert first["videos"]["n"] == 2
    losses = per_sample_losses(pipe, *heldout_samples(4, 1, 32, 1), seed=1, batch_size=3)  # batching is invisible
    again = per_sample_losses(pipe, *heldout_samples(4, 1, 32, 1), seed=1, batch_size=4)
    assert np.allclose(losses["loss"], again["loss"], rtol=1e-4)
    assert summarise_losses(losses)["loss"] == float(losses["loss"].double().mean())


def test_paired_comparison_pairs_prompts(tmp_path, capsys):
    from gentron.evaluation import paired as mod

    row = lambda i, kind, ok: {"id": i, "check": {"kind": kind, "correct": ok}}  # noqa: E731
    base = {f"c{i}": row(f"c{i}", "count", i < 6) for i in range(10)}
    other = {f"c{i}": row(f"c{i}", "count", 2 <= i < 7) for i in range(10)}  # lost c0, c1; won c6
    r = mod.paired(base, other, "count")
    assert (r["n"], r["base"], r["other"], r["lost"], r["won"]) == (10, 60, 50, 2, 1)
    # per-prompt differences -1, -1, +1 and seven 0: mean -0.1, SD sqrt(0.29), interval 1.96 * SD / sqrt(10)
    assert r["diff"] == -10 and abs(r["ci95"] - 196 * (0.29 / 10) ** 0.5) < 1e-9
    same = mod.paired(base, base, "count")
    assert same["diff"] == 0 and same["ci95"] == 0  # identical runs: no change, no spread
    assert mod.paired(base, other, "relation") == {"n": 0}
    # another check: only the prompts it applies to count (None = not applicable, as direction for a still image)
    for i, r in enumerate(base.values()):
        r["check"]["direction"] = None if i >= 8 else i < 4
    for i, r in enumerate(other.values()):
        r["check"]["direction"] = i < 5
    r = mod.paired(base, other, "count", check="direction")
    assert (r["n"], r["lost"], r["won"]) == (8, 0, 1)
    for name, rows in (("base", base), ("other", other)):  # the command reads two runs' folders
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"results": list(rows.values())}))
    assert mod.main([str(tmp_path / "base"), str(tmp_path / "other")]) == 0
    assert "| count | 10 | 60 | 50 | -10 ± " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path / "base")])  # an odd number of folders names no pair


def test_gallery_renders_every_prompt_and_the_motion_strengths_in_one_batch(tmp_path, tiny_pipeline):
    """The README's pictures: every image and video prompt, one MP4 per video, and the motion prompt at each λM
    from one batched call (one noise), its first row the λM-0 video as that prompt sampled alone."""
    from PIL import Image

    from gentron.evaluation.gallery import (IMAGE_PROMPTS, MOTION_PROMPT, MOTION_STRENGTHS, VIDEO_PROMPTS,
                                            make_gallery)

    index = make_gallery(tiny_pipeline, tmp_path, seed=3, steps=2)
    assert [v["prompt"] for v in index["videos"]] == VIDEO_PROMPTS and len(index["images"]) == len(IMAGE_PROMPTS)
    assert all((tmp_path / v["file"]).stat().st_size > 0 for v in index["videos"])
    assert index["motion"] == {"prompt": MOTION_PROMPT, "seed": 3, "motion_guidance": list(MOTION_STRENGTHS)}
    assert any("moving left" in p for p in VIDEO_PROMPTS) and any("moving right" in p for p in VIDEO_PROMPTS)
    alone = tiny_pipeline(MOTION_PROMPT, frames=8, seed=3, num_inference_steps=2, motion_guidance=0.0).frames[0]
    sheet = np.asarray(Image.open(tmp_path / "motion_strips.png").convert("RGB")).astype(int)
    side = alone.shape[1]
    assert sheet.shape[0] > len(MOTION_STRENGTHS) * 2 * side and sheet.shape[1] >= 8 * 2 * side
    for f in range(8):  # the first row: the 8 frames at 2x, 2 px apart
        x = f * (2 * side + 2)
        assert np.abs(sheet[:2 * side:2, x:x + 2 * side:2] - alone[f]).max() <= 1
