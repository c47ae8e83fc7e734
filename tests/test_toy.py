"""The toy gates: their data and judge agree with the Shapes World contract, and the command runs and resumes."""
import json

import numpy as np
import pytest

from gentron.data import shapes
from gentron.evaluation.toy import ToySettings, judge, prompts, render_data, run_toy, toy_spec


@pytest.mark.parametrize("task", ["side", "direction"])
def test_rendered_truth_is_judged_right_and_its_opposite_wrong(task):
    rng = np.random.default_rng(0)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up",
                "to the left of": "to the right of", "to the right of": "to the left of"}
    for _ in range(12):
        spec = toy_spec(task, rng)
        frames = shapes.render(spec, 64, 8 if task == "direction" else 1, rng)
        caption = shapes.caption_text(spec)
        assert judge(task, caption, frames) == "right", caption
        if task == "side":
            flipped = caption.replace(spec.relation, opposite[spec.relation])
        else:
            word = caption.split()[-1]
            flipped = caption[: -len(word)] + opposite[word]
        assert judge(task, flipped, frames) == "wrong", flipped
    blank = np.full((8, 64, 64, 3), 16, np.uint8)
    assert judge(task, prompts(task, 1)[0], blank) == "unclear"


def test_prompts_cycle_every_caption_of_the_task():
    assert prompts("direction", 5) == [f"a red circle moving {d}" for d in ("left", "right", "up", "down", "left")]
    assert len(set(prompts("side", 40))) == 4


def test_settings_errors_name_the_flag():
    with pytest.raises(ValueError, match="--task must be one of side, direction"):
        ToySettings(task="colour").validate()
    with pytest.raises(ValueError, match="--shift must be a number > 0"):
        ToySettings(shift=0).validate()


@pytest.mark.slow
def test_a_tiny_toy_run_prints_its_line_and_resumes(tmp_path):
    settings = ToySettings(task="direction", steps=2, n_data=4, n_samples=2, sampling_steps=2)
    first = run_toy(settings, tmp_path / "arm")
    assert first["steps"] == 2 and sum(first["counts"].values()) == 2 and 0 <= first["accuracy"] <= 1
    assert json.loads((tmp_path / "arm" / "result.json").read_text()) == first
    assert len((tmp_path / "arm" / "samples.jsonl").read_text().splitlines()) == 2
    more = run_toy(ToySettings(task="direction", steps=4, n_data=4, n_samples=2, sampling_steps=2), tmp_path / "arm")
    log = [json.loads(line)["step"] for line in (tmp_path / "arm" / "run" / "loss.jsonl").read_text().splitlines()]
    assert more["steps"] == 4 and log[-1] == 4  # resumed from step 2, not trained anew
    assert render_data("direction", 4, tmp_path / ".toy-data-direction-4-0" / "media", 0).is_dir()


@pytest.mark.slow
def test_the_cli_runs_the_side_toy_and_prints_one_json_line(tmp_path, capsys):
    from gentron.cli import main

    argv = ["toy", "--task", "side", "--steps", "2", "--n-data", "4", "--n-samples", "2", "--sampling-steps", "2",
            "--out-dir", str(tmp_path / "side")]
    assert main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["task"] == "side" and line["objective"] == "flow" and line["shift"] == 8.0 and line["steps"] == 2
    assert sum(line["counts"].values()) == 2
