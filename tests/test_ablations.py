"""The claims report: it pairs the arms of a claim prompt by prompt, weighs the gap against its 95% interval, and
says plainly when our result agrees with the claim, disagrees, or cannot tell (and how many prompts would)."""
import json

import pytest

from gentron.evaluation.ablations import ABLATIONS, collect, decide, main, prompt_scores, verdict

CATEGORIES = ("single", "relation", "count")


def image_results(right: int, n: int = 30) -> list[dict]:
    """n prompts a category; the first ``right`` of each are right."""
    return [{"id": f"{kind[0]}{i}", "kind": kind,
             "check": {"kind": kind, "correct": i < right, "attribute": i < right, "spatial": i < right,
                       "dynamic_degree": 0.0}}
            for kind in CATEGORIES for i in range(n)]


def video_results(right: int, n: int = 30, moved: float = 0.05) -> list[dict]:
    return [{"id": f"v{kind[6]}{i}", "kind": kind,
             "check": {"kind": kind, "correct": i < right, "attribute": i < right, "direction": i < right,
                       "objects_every_frame": i < right, "temporal_consistency": True,
                       "dynamic_degree": moved + 0.001 * i}} for kind in ("video_single", "video_pair")
            for i in range(n)]


def write_run(root, run, results, eval_dir="eval", losses=None, video=False):
    from gentron.evaluation.compbench import summarise

    (root / run / eval_dir).mkdir(parents=True, exist_ok=True)
    if losses is not None:
        (root / run / "loss").mkdir(exist_ok=True)
        held = {"loss": sum(losses) / len(losses), "per_sample": {"loss": losses}}
        (root / run / "loss" / "loss.json").write_text(json.dumps({"videos" if video else "images": held}))
    table = summarise(results)
    (root / run / eval_dir / "results.json").write_text(json.dumps({"table": table, "results": results}))
    (root / run / "loss.jsonl").write_text("".join(json.dumps({"step": 10 * i, "loss": 0.1 / i, "seconds": i})
                                                   + "\n" for i in range(1, 7)))


def test_a_prompt_scores_the_mean_of_its_categorys_checks():
    results = video_results(1, n=2)
    results[1]["check"]["direction"] = True  # every frame wrong, direction right: half
    assert prompt_scores(results, ABLATIONS[-1].checks) == {"vs0": 100.0, "vs1": 100.0}  # direction alone
    both = prompt_scores(results, (("video_single", ("objects_every_frame", "direction")),))
    assert both == {"vs0": 100.0, "vs1": 50.0}


def test_decide_weighs_the_gap_against_its_interval():
    assert decide(5.0, 2.0, 100) == ("agrees", "")
    assert decide(-5.0, 2.0, 100) == ("disagrees", "")
    word, why = decide(1.0, 2.0, 100)  # a quarter of the interval's width squared: four times the prompts
    assert word == "cannot tell" and "about 400 prompts" in why
    assert decide(0.0, 0.0, 100) == ("cannot tell", "no gap on these prompts")


def test_report_verdicts_and_collect(tmp_path, capsys):
    runs = tmp_path / "runs"
    right = {"t2i_adaln": 5, "t2i_ref": 25,  # cross-attention far ahead: agrees
             "t2i_clip": 24, "t2i_t5": 10,  # CLIP alone one prompt a category behind: cannot tell
             "t2i_s": 28, "t2i_s_deep": 10}  # the biggest model far behind the smaller ones: disagrees
    base = [0.10, 0.12, 0.08, 0.11, 0.09, 0.10, 0.13, 0.07]
    losses = {"t2i_adaln": [x + 0.02 for x in base], "t2i_ref": base, "t2i_clip": [x - 0.01 for x in base],
              "t2i_t5": [x + 0.03 for x in base], "t2i_s": base, "t2i_s_deep": [x - 0.02 for x in base]}
    for run, r in right.items():
        write_run(runs, run, image_results(r), losses=losses[run])
    write_run(runs, "t2v_videos_only", video_results(10), video=True)
    write_run(runs, "t2v_ref", video_results(20), video=True)  # λM 1.3 not evaluated yet
    for value in (1.0, 1.3, 2.0):  # the motion curve: more motion above λM 1, on every video
        write_run(runs, "t2v_ref", video_results(20, moved=0.05 * value), f"sweep_motion/motion_guidance_{value:g}")
    (runs / "t2v_ref" / "sweep_motion" / "sweep.json").write_text(json.dumps({
        "suite": "sweep-motion", "parameter": "motion_guidance", "values": [1.0, 1.3, 2.0], "seed": 8, "n_images": 0,
        "n_videos": 60, "points": [{"value": v, "table": json.loads(
            (runs / "t2v_ref" / "sweep_motion" / f"motion_guidance_{v:g}" / "results.json").read_text())["table"]}
            for v in (1.0, 1.3, 2.0)]}))
    (runs / "t2i_ref" / "eval" / "i0000.png").write_bytes(b"not copied")

    collected = tmp_path / "collected"
    assert main(["collect", str(runs), str(collected)]) == 0
    assert not (collected / "t2i_ref" / "eval" / "i0000.png").exists()
    assert (collected / "t2v_ref" / "sweep_motion" / "motion_guidance_1.3" / "results.json").is_file()
    assert len(collect(runs, tmp_path / "again")) == json.loads(capsys.readouterr().out)["copied"]

    out = tmp_path / "docs" / "ablations.md"
    assert main(["report", str(collected), "--out", str(out)]) == 0
    text = out.read_text()
    assert (tmp_path / "docs" / "ablations.png").stat().st_size > 5000 and "![claims](ablations.png)" in text
    assert (tmp_path / "docs" / "ablations_motion.png").is_file()
    summary = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert summary["Text conditioning"].endswith("| agrees |")
    assert "| cannot tell (a gap this size needs about" in summary["Text encoder"]
    assert "against CLIP" in summary["Text encoder"]
    assert summary["Scale"].endswith("| disagrees |") and "against S/2 " in summary["Scale"]
    assert summary["Motion-free guidance"].endswith("| not run yet |")
    assert summary["λM sets how much things move"].endswith("| agrees |")
    sections = {s.split("\n")[0]: s for s in text.split("## ")[1:]}
    assert "**Held-out loss: agrees**" in sections["Text conditioning"]
    assert "**Held-out loss: disagrees**: -0.01000" in sections["Text encoder"]
    assert "| adaLN-Zero | 16.7 | 16.7 | 16.7 | 16.7 | 0.12000 |" in sections["Text conditioning"]
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "missing")])


def test_verdict_needs_every_arm():
    assert verdict(ABLATIONS[0], []) == {"verdict": "not run yet"}
    with pytest.raises(StopIteration):  # rows without the claimed winner are a programming error
        verdict(ABLATIONS[0], [{"label": "x", "scores": {}}, {"label": "y", "scores": {}}])
