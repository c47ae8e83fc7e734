"""The web app: its handlers without a server, then the served app driven with gradio_client."""
import copy
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from gentron.studio import (MAX_SEED, Studio, contact_sheet, labelled_tiles,  # noqa: E402
                            parse_motion_strengths)
from test_model import _randomise  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VIDEO = dict(mode="video", prompt="a red circle moving right", negative_prompt="", frames=8, fps=4, resolution=32,
             steps=25, text_guidance=7.5, motion_guidance=1.0, seed=3, sampler="dpm++", precision="none",
             text_precision=app.SAME_PRECISION)
COMPARE = dict(prompt="a red circle moving right", negative_prompt="", motion_guidances="0, 1, 2", seed=5, frames=4,
               fps=4, resolution=32, steps=6, text_guidance=7.5, sampler="dpm++")


@pytest.fixture(scope="module")
def live_pipeline_dir(tiny_pipeline, tmp_path_factory):
    """The tiny pipeline with its transformer's weights perturbed, as training leaves them: a fresh adaLN-Zero
    model predicts zero noise, so its clean estimate (every preview) never changes during sampling."""
    pipe = copy.deepcopy(tiny_pipeline)
    _randomise(pipe.transformer)
    path = tmp_path_factory.mktemp("live-pipeline")
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def studio(live_pipeline_dir, tmp_path_factory):
    """One person's studio (switch_precision): the precision tests switch modes; tests/test_studio_shared.py has
    the shared server's fixed one."""
    return Studio(str(live_pipeline_dir), device="cpu", outputs_dir=tmp_path_factory.mktemp("studio-outputs"),
                  precision="none", switch_precision=True)


@pytest.fixture(scope="module")
def ui(studio):
    return app.Handlers(studio)


def probe(path) -> str:
    """ffmpeg's description of a media file (stderr of ``ffmpeg -i``)."""
    import imageio_ffmpeg

    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True).stderr


def assert_browser_mp4(path):
    info = probe(path)
    assert Path(path).suffix == ".mp4" and Path(path).stat().st_size > 0
    assert "h264" in info and "yuv420p" in info, info


def value(update):
    """The value of a gr.update(...) dict or a plain value."""
    return update.get("value") if isinstance(update, dict) else update


# ---- light: imports, constants, hosting defaults --------------------------------------------------
def test_import_app_does_not_import_torch():
    code = ("import sys, gentron.studio; assert 'gradio' not in sys.modules, 'studio imported gradio'; import app; "
            "heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_studio_constants_match_the_engine():
    from gentron.pipeline import MAX_SEED as ENGINE_MAX_SEED

    assert MAX_SEED == ENGINE_MAX_SEED


def test_hosting_defaults_are_local_and_private(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = app.parse_args([])
    assert args.host == "127.0.0.1" and args.share is False and args.model is None and args.port is None
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert app.parse_args([]).host == "0.0.0.0"
    assert app.parse_args(["--host", "::1", "--port", "7999", "--model", "random:tiny"]).port == 7999
    assert args.compile is None and app.parse_args(["--compile"]).compile is True  # None: $GENTRON_COMPILE decides
    assert app.parse_args(["--no-compile"]).compile is False


def test_sheets_and_labels():
    frames = np.zeros((3, 10, 8, 8, 3), np.uint8)
    sheet = contact_sheet(frames, ["a", "b", "c"], upscale=2, columns=8)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 8 * 16 + 7 * 2  # 8 columns of 16 px, 2 px gaps
    tiles = labelled_tiles(frames, ["λM = 0", "λM = 1", "λM = 2"], upscale=4)
    assert tiles.shape == (10, 32 + 24, 3 * 32 + 2 * 4, 3)  # a label bar under each, 4 px between
    assert not (tiles[:, 32:] == 255).all()  # the labels are drawn
    assert parse_motion_strengths("0, 0.5 1.0;2") == [0.0, 0.5, 1.0, 2.0]
    for bad in ("", "a, b", ",".join(["1"] * 9)):
        with pytest.raises(ValueError, match="motion strengths"):
            parse_motion_strengths(bad)


# ---- handlers, no server --------------------------------------------------------------------------
def test_generate_streams_previews_then_a_browser_mp4(ui):
    outs = list(ui.generate(**VIDEO))
    previews = [o[1] for o in outs[:-1] if isinstance(o[1], np.ndarray)]
    assert len(previews) >= 2 and previews[0].ndim == 3  # one sheet of the 8 frames
    status, _, image, video, files, settings, seed = outs[-1]
    assert status.startswith("Done") and seed == 3 and image["visible"] is False and video["visible"] is True
    assert_browser_mp4(value(video))
    assert settings["seed"] == 3 and settings["frames"] == 8 and settings["motion_guidance"] == 1.0
    assert sorted(Path(f).suffix for f in files) == [".json", ".mp4"]
    assert "a red circle moving right" in Path(files[1]).read_text()
    assert "256x256" in probe(value(video))  # 32 px, enlarged x8 for display


def test_image_mode_gives_a_png(ui):
    outs = list(ui.generate(**{**VIDEO, "mode": "image", "steps": 4, "seed": None}))
    status, _, image, video, files, settings, seed = outs[-1]
    assert image["visible"] is True and video["visible"] is False and value(image).endswith(".png")
    assert 0 <= seed <= MAX_SEED and settings["seed"] == seed and f"seed {seed}" in status  # the seed used is shown
    assert settings["frames"] == 1 and "fps" not in settings


def test_stop_mid_run_then_ready(ui, studio):
    outs, stopped_after = [], None
    for out in ui.generate(**{**VIDEO, "steps": 200, "resolution": 64}):
        outs.append(out)
        if stopped_after is None and isinstance(out[1], np.ndarray):
            assert ui.stop() == "Stopping…"  # the Stop button (no request: the "default" session)
            stopped_after = len(outs)
    assert outs[-1][0].startswith("Stopped at step") and "Ready" in outs[-1][0]
    outcome, step, total = studio.last_outcome
    assert outcome == "stopped" and step < total == 200
    assert not studio.busy and ui.stop() is not None  # nothing left to stop
    assert value(list(ui.generate(**{**VIDEO, "steps": 3}))[-1][0]).startswith("Done")


def test_stop_stops_only_its_own_sessions_run(ui, studio):
    alice, bob = SimpleNamespace(session_hash="alice"), SimpleNamespace(session_hash="bob")
    outs = []
    for out in ui.generate(**{**VIDEO, "steps": 200, "resolution": 64}, request=alice):
        outs.append(out)
        if sum(isinstance(o[1], np.ndarray) for o in outs) == 1 and isinstance(out[1], np.ndarray):
            assert ui.stop(bob) != "Stopping…" and ui.stop() != "Stopping…"  # others' Stop buttons find no run
            assert ui.stop(alice) == "Stopping…"
    assert outs[-1][0].startswith("Stopped at step") and studio.last_outcome[0] == "stopped"


def test_closing_the_stream_stops_the_run(studio):
    stream = studio.generate("a big yellow star spinning", frames=8, resolution=64, steps=200)
    for update in stream:
        if update.preview is not None:
            break
    stream.close()  # what gradio does when a request is cancelled
    assert studio.last_outcome[0] == "stopped" and studio.last_outcome[1] < 200 and not studio.busy


@pytest.mark.parametrize("change,match", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt="   \n "), "prompt is empty"),
    (dict(prompt="a" * 2500), "prompt is 2500 characters"),
    (dict(prompt="red " * 40), "prompt is .* tokens"),
    (dict(negative_prompt="blue " * 40), "negative_prompt is .* tokens"),
    (dict(text_guidance=-1.0), re.escape("Text guidance λT (text_guidance) must be a number from 0 to 50; got -1.0")),
    (dict(text_guidance=float("nan")), re.escape("Text guidance λT (text_guidance) must be a number")),
    (dict(motion_guidance=99.0), re.escape("Motion guidance λM (motion_guidance) must be a number from 0 to 50")),
    (dict(steps=0), re.escape("Steps (steps) must be an integer from 1 to 500; got 0")),
    (dict(steps=2.5), re.escape("Steps (steps) must be an integer from 1 to 500; got 2.5")),
    (dict(resolution=30), re.escape("Resolution (pixels a side) (resolution) must be an integer from 4 to 2048, "
                                    "a multiple of 4; got 30")),
    (dict(frames=99), re.escape("Frames (frames) must be an integer from 1 to 64; got 99")),
    (dict(seed=-1), re.escape("Seed (seed) must be an integer from 0 to 4294967295; got -1")),
    (dict(seed=MAX_SEED + 1), re.escape("Seed (seed) must be an integer from 0 to 4294967295; got 4294967296")),
    (dict(sampler="plms"), re.escape("Sampler (sampler) must be one of ddim, dpm++, euler; got 'plms'")),
    (dict(fps=0), re.escape("Frames per second (fps) must be a number from 0.5 to 60; got 0")),
    (dict(precision="fp8"), re.escape("Precision / quantization (precision) must be one of none, bf16")),
    (dict(text_precision="fp8"), re.escape("Text encoders' precision (text_precision) must be one of none, bf16")),
    (dict(mode="gif"), re.escape("Mode (mode) must be one of image, video; got 'gif'")),
])
def test_bad_input_raises_gr_error_with_the_engines_message(ui, change, match):
    with pytest.raises(gr.Error, match=match):
        list(ui.generate(**{**VIDEO, **change}))


def test_text_encoders_take_their_own_precision(ui, studio):
    """The app's second precision menu: the towers in bf16 under an fp32 transformer, recorded in the settings;
    'same' goes back to the transformer's."""
    import torch

    out = list(ui.generate(**{**VIDEO, "mode": "image", "text_precision": "bf16", "steps": 2}))
    assert out[0][0] == "Loading the model at precision none (text encoders bf16)…"
    settings = out[-1][5]
    assert (settings["precision"], settings["text_precision"]) == ("none", "bf16")
    pipe = studio.pipeline()
    assert pipe.text_encoder.dtype == torch.bfloat16 and pipe.transformer.dtype == torch.float32
    compared = list(ui.compare(**{**COMPARE, "steps": 2}))[-1][5]  # the compare tab keeps the loaded modes
    assert (compared["precision"], compared["text_precision"]) == ("none", "bf16") and studio.pipeline() is pipe
    out = list(ui.generate(**{**VIDEO, "mode": "image", "steps": 2}))
    assert out[-1][5]["text_precision"] == "none" and studio.pipeline().text_encoder.dtype == torch.float32


def test_compare_gives_one_labelled_result_per_motion_strength(ui):
    outs = list(ui.compare(**COMPARE))
    assert any(isinstance(o[1], np.ndarray) for o in outs[:-1])  # a preview, one row per λM
    status, _, tiled, gallery, files, settings, seed = outs[-1]
    assert status.startswith("Done") and seed == 5
    assert [label for _, label in gallery] == ["λM = 0", "λM = 1", "λM = 2"]
    for path, _ in gallery:
        assert_browser_mp4(path)
    assert_browser_mp4(tiled)
    assert "776x280" in probe(tiled)  # 3 tiles of 256 px and 2 gaps of 4; a 24 px label bar under each
    assert settings["motion_guidance"] == [0.0, 1.0, 2.0] and len(files) == 5  # tiled, 3 parts, json
    with pytest.raises(gr.Error, match="motion strengths must be numbers"):
        list(ui.compare(**{**COMPARE, "motion_guidances": "zero, one"}))
    with pytest.raises(gr.Error, match=re.escape("Frames (frames) must be at least 2")):
        list(ui.compare(**{**COMPARE, "frames": 1}))


def test_old_results_are_cleaned(studio, tmp_path):
    small = Studio(studio.model, device="cpu", outputs_dir=tmp_path, max_runs=2, max_age_s=3600)
    small._pipe, small._pipe_modes = studio._pipe, studio._pipe_modes  # the loaded model, not a reload
    paths = [list(small.generate(f"{n} red circles", frames=1, steps=2))[-1].result.path
             for n in ("two", "three", "two")]
    assert len(small.runs()) == 2 and not paths[0].exists() and paths[2].exists()  # bounded count
    old = time.time() - 7200
    os.utime(small.runs()[0], (old, old))
    assert small.cleanup() == 1 and len(small.runs()) == 1  # bounded age


def test_api_signature_and_one_shared_queue(studio):
    demo = app.build_demo(studio)
    api = demo.get_api_info()["named_endpoints"]
    params = {p["parameter_name"]: p for p in api["/generate"]["parameters"]}
    assert list(params) == ["prompt", "negative_prompt", "frames", "resolution", "steps", "text_guidance",
                            "motion_guidance", "seed"]
    assert [n for n, p in params.items() if not p["parameter_has_default"]] == ["prompt"]
    assert params["frames"]["parameter_default"] == 8 and params["steps"]["parameter_default"] == 25
    assert "/compare_motion" in api and "/ui_generate" not in api  # the UI's own event is private
    model_events = [fn for fn in demo.fns.values() if fn.concurrency_id == app.MODEL_QUEUE]
    assert len(model_events) == 3 and all(fn.concurrency_limit == 1 for fn in model_events)
    assert demo._queue.max_size == app.QUEUE_SIZE == 32 * app.PER_SESSION


# ---- end to end: the served app, driven with gradio_client ---------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(studio):
    port = free_port()
    demo = app.serve(studio, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served, verbose=False)


def wait_for(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_e2e_previews_stream_before_a_valid_mp4(client):
    started = time.perf_counter()
    job = client.submit(prompt="a red circle moving right", steps=25, seed=7, api_name="/generate")
    arrivals = []
    for preview, result in job:
        arrivals.append((time.perf_counter() - started, preview, result))
    previews = [a for a in arrivals if a[1] and a[2] is None]
    assert len(previews) >= 2 and arrivals[-1][2] is not None
    assert all(a[0] <= arrivals[-1][0] for a in previews)
    assert_browser_mp4(arrivals[-1][2])
    from gentron.export import read_settings

    assert read_settings(arrivals[-1][2])["seed"] == 7
    print(f"first preview after {previews[0][0]:.2f} s, MP4 after {arrivals[-1][0]:.2f} s")


@pytest.mark.slow
def test_e2e_cancel_mid_run_then_the_next_request_is_served(client, studio):
    job = client.submit(prompt="a big yellow star spinning", steps=200, resolution=64, api_name="/generate")
    wait_for(lambda: len(job.outputs()) >= 1)  # a preview has arrived: sampling is under way
    job.cancel()
    wait_for(lambda: studio.last_outcome[0] == "stopped" and not studio.busy)  # the run halted
    outcome, step, total = studio.last_outcome
    assert outcome == "stopped" and step < total == 200
    preview, result = client.predict(prompt="three purple circles", frames=1, steps=4, api_name="/generate")
    assert result.endswith(".png") and Path(result).stat().st_size > 0


@pytest.mark.slow
def test_e2e_bad_input_is_reported_and_the_server_keeps_serving(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="prompt is empty"):
        client.predict(prompt="  ", api_name="/generate")
    with pytest.raises(AppError, match=re.escape("Motion guidance λM (motion_guidance) must be a number from 0 to 50")):
        client.predict(prompt="a red circle", motion_guidances="0, 99", frames=4, steps=4, api_name="/compare_motion")
    with pytest.raises(AppError, match=re.escape("Sampler (sampler) must be one of ddim, dpm++, euler; got 'plms'")):
        client.predict(prompt="a red circle", frames=4, steps=4, sampler="plms", api_name="/compare_motion")
    status, preview, tiled, gallery, files, settings, seed = client.predict(
        prompt="a red circle", motion_guidances="0, 2", frames=4, steps=4, api_name="/compare_motion")
    assert_browser_mp4(tiled if isinstance(tiled, str) else tiled["video"])
    assert [item["caption"] for item in gallery] == ["λM = 0", "λM = 2"] and settings["motion_guidance"] == [0, 2]


def test_a_preview_equal_to_the_last_one_sent_is_dropped():
    """An unchanged preview says nothing new, and re-sending it makes gradio rewrite its cached file under a client
    that may still be downloading it."""
    from gentron.studio import Update

    a, b = np.zeros((1, 1, 4, 4, 3), np.uint8), np.ones((1, 1, 4, 4, 3), np.uint8)
    updates = [Update(1, 4, a, None), Update(2, 4, a.copy(), None), Update(3, 4, b, None), Update(4, 4, None, None)]
    kept = [u.preview for u in app._engine(lambda key: iter(updates))]  # a Studio stream, given the session
    assert kept[0] is a and kept[1] is None and kept[2] is b and kept[3] is None


def test_the_sampler_menu_offers_what_the_model_takes(studio, live_pipeline_dir, tmp_path):
    from gentron.diffusion import FLOW_SAMPLERS, SAMPLERS, flow_scheduler
    from gentron.pipeline import GenTronPipeline

    assert studio.info().samplers == tuple(sorted(SAMPLERS)) and studio.info().default_sampler in SAMPLERS
    pipe = GenTronPipeline.from_pretrained(live_pipeline_dir)
    GenTronPipeline(**{**pipe.components, "scheduler": flow_scheduler(8.0)}).save_pretrained(tmp_path / "flow")
    info = Studio(str(tmp_path / "flow"), device="cpu", outputs_dir=tmp_path / "out").info()
    assert info.samplers == tuple(sorted(FLOW_SAMPLERS)) and info.default_sampler == "flow-euler"


def test_the_page_and_the_studio_start_from_the_models_own_text_guidance_and_steps(live_pipeline_dir, tmp_path):
    from gentron.pipeline import GenTronPipeline

    pipe = GenTronPipeline.from_pretrained(live_pipeline_dir)
    GenTronPipeline(**pipe.components, text_guidance=3.5, steps=3).save_pretrained(tmp_path / "own")
    studio = Studio(str(tmp_path / "own"), device="cpu", outputs_dir=tmp_path / "out")
    assert studio.info().default_text_guidance == 3.5 and studio.info().default_steps == 3
    demo = app.build_demo(studio)
    for name, value in (("text_guidance", 3.5), ("steps", 3)):
        sliders = [b for b in demo.blocks.values() if getattr(b, "label", None) == app.LABELS[name]]
        assert len(sliders) == 2 and all(s.value == value for s in sliders)  # both tabs'
        api = demo.get_api_info()["named_endpoints"]["/generate"]["parameters"]
        assert next(p for p in api if p["parameter_name"] == name)["parameter_default"] == value
    last = list(studio.generate("a red circle", frames=1, resolution=32))[-1]
    assert last.result.settings["text_guidance"] == 3.5 and last.result.settings["steps"] == 3 and last.total == 3
    assert list(studio.generate("a red circle", frames=1, resolution=32, steps=2))[-1].total == 2
