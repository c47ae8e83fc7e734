"""CLI and export: JSON lines out, settings embedded, clear errors with non-zero exits."""
import json
import subprocess
import sys

import numpy as np
import pytest

from gentron.cli import main
from gentron.export import read_settings, read_video, save_result


def test_export_round_trips_settings(tmp_path):
    frames = (np.random.default_rng(0).random((4, 30, 30, 3)) * 255).astype(np.uint8)
    settings = {"prompt": "a red circle", "seed": 3}
    for name in ("v.mp4", "v.gif"):
        path = save_result(frames, tmp_path / name, fps=4, settings=settings)
        assert read_settings(path) == settings
        back = read_video(path)
        assert back.shape == (4, 30, 30, 3)
    png = save_result(frames[:1], tmp_path / "i.png", settings=settings)
    assert read_settings(png) == settings
    with pytest.raises(ValueError, match="a PNG holds one frame"):
        save_result(frames, tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown output type"):
        save_result(frames, tmp_path / "x.avi")


def test_mp4_is_browser_playable(tmp_path):
    """H.264, yuv420p, even sides (odd sides are padded; they once gave 0-byte files)."""
    import imageio_ffmpeg

    frames = np.zeros((3, 33, 31, 3), np.uint8)
    path = save_result(frames, tmp_path / "odd.mp4", settings={})
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe and "32x34" in probe  # W x H, both padded to even


@pytest.mark.slow  # end to end
def test_generate_single_and_batch(tmp_path, tiny_pipeline_dir, capsys):
    out = tmp_path / "one.mp4"
    assert main(["generate", "--prompt", "a red circle moving left", "--out", str(out), "--model",
                 str(tiny_pipeline_dir), "--resolution", "32", "--steps", "3", "--frames", "3", "--seed", "5"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["path"] == str(out) and line["seed"] == 5 and line["frames"] == 3 and line["seconds"] > 0
    assert read_settings(out)["prompt"] == "a red circle moving left"
    assert line["guidance_interval"] == [0.0, 1000.0]  # the model's own: this folder names none
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "img", "prompt": "a blue square"}\n{"id": "vid", "prompt": "a red star spinning", '
                    '"frames": 2}\n')
    assert main(["generate", "--prompts-file", str(jobs), "--out-dir", str(tmp_path / "o"), "--model",
                 str(tiny_pipeline_dir), "--resolution", "32", "--steps", "2", "--quantize", "bf16",
                 "--quantize-text", "none", "--guidance-interval", "0,800"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert lines[1]["guidance_interval"] == [0.0, 800.0]
    assert [x["id"] for x in lines] == ["img", "vid"]
    assert (lines[0]["quantize"], lines[0]["quantize_text"]) == ("bf16", "none")
    assert (tmp_path / "o" / "img.png").exists() and (tmp_path / "o" / "vid.mp4").exists()


@pytest.mark.parametrize("argv,match", [
    (["--prompt", "", "--out", "x.png"], "--prompt is empty"),
    (["--prompt", "a red circle", "--out", "x.png", "--steps", "0"], "--steps must be an integer from 1 to 500 (got 0)"),
    (["--prompt", "a red circle", "--out", "x.png", "--scheduler", "plms"], "--scheduler must be one of ddim, dpm++, euler"),
    (["--prompt", "a red circle", "--out", "x.png", "--seed", "-3"], "--seed must be an integer from 0"),
    (["--prompt", "a red circle", "--out", "x.png", "--resolution", "30"], "--resolution must be a multiple of 4 between 4 and 2048 (got 30)"),
    (["--prompt", "a red circle"], "--out is required"),
    (["--prompt", "a" * 10_000, "--out", "x.png"], "--prompt is 10000 characters"),
    (["--prompt", "a red\x07circle", "--out", "x.png"], "--prompt contains control characters"),
    (["--prompt", "a red circle", "--out", "x.png", "--frames", "0"], "--frames must be an integer from 1 to 64 (got 0)"),
    (["--prompt", "a red circle", "--out", "x.mp4", "--frames", "100000"], "--frames must be an integer from 1"),
    (["--prompt", "a red circle", "--out", "x.png", "--steps", "100000"], "--steps must be an integer from 1 to"),
    (["--prompt", "a red circle", "--out", "x.png", "--text-guidance", "nan"], "--text-guidance must be a number from 0 to 50 (got nan)"),
    (["--prompt", "a red circle", "--out", "x.png", "--text-guidance", "inf"], "--text-guidance must be a number from 0 to 50"),
    (["--prompt", "a red circle", "--out", "x.mp4", "--motion-guidance", "-1"], "--motion-guidance must be a number from 0 to 50"),
    (["--prompt", "a red circle", "--out", "x.png", "--seed", "4294967296"], "--seed must be an integer from 0 to 4294967295"),
    (["--prompt", "a red circle", "--out", "x.png", "--resolution", "4096"], "--resolution must be a multiple of 4"),
    (["--prompt", "a red circle", "--out", "x.png", "--quantize", "int3"], "--quantize must be one of none, bf16"),
    (["--prompt", "a red circle", "--out", "x.png", "--quantize-text", "int3"], "--quantize-text must be one of none, bf16"),
    (["--prompt", "a red circle", "--out", "x.png", "--model", "/nonexistent/model"], "does not exist"),
    (["--prompt", "a red circle", "--out", "x.png", "--guidance-interval", "900"], "two timesteps as LOW,HIGH"),
    (["--prompt", "a red circle", "--out", "x.png", "--guidance-interval", "900,0"], "--guidance-interval must be LOW,HIGH with 0 <= LOW <= HIGH <= 1000"),
])
def test_bad_arguments_exit_nonzero_with_message(tmp_path, tiny_pipeline_dir, capsys, argv, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = [] if "--model" in argv else ["--model", str(tiny_pipeline_dir)]
    assert main(["generate", *argv, *model]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow  # end to end
def test_info_counts_on_meta_device():
    proc = subprocess.run([sys.executable, "-m", "gentron", "info", "--preset", "XL/2"], capture_output=True, text=True)
    info = json.loads(proc.stdout)
    assert info["depth"] == 28 and info["hidden_size"] == 1152 and 8e8 < info["parameters"] < 9e8


def test_any_unicode_prompt_is_drawn_not_refused(tmp_path, tiny_pipeline_dir):
    """Words outside the vocabulary become unknown tokens; only control characters are refused."""
    out = tmp_path / "u.png"
    prompt = "ein roter Kreis 🙂 — 赤い円 \u202eabc"
    assert main(["generate", "--prompt", prompt, "--out", str(out), "--model", str(tiny_pipeline_dir),
                 "--resolution", "32", "--steps", "2"]) == 0
    assert read_settings(out)["prompt"] == prompt
