"""GenTron Studio: a web UI for text-to-image and text-to-video with motion-free guidance.

    python app.py [--model FOLDER|HUB_ID|random:tiny] [--host 127.0.0.1] [--port 7860] [--precision MODE] [--local]

The model is --model, else $GENTRON_MODEL, else the built-in assets/gentron-shapes. The server
listens on 127.0.0.1 unless --host (or $GRADIO_SERVER_NAME) says otherwise; --share is off by default.
One process serves everyone: the precision is chosen at launch (--precision, $GENTRON_PRECISION) and a
request cannot change it unless --local says the studio is one person's; each session may queue
PER_SESSION jobs; only /generate and /compare_motion are callable by name; the outputs and gradio's
cache files go on exit, SIGTERM and SIGINT included.

This file is wiring only (layout, then events, then the thin handlers); gentron.studio.Studio
holds the logic. Nothing heavy is imported here: the model loads when the app is built.
"""
from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import random
import re
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import gradio as gr

from gentron.loading import model_label
from gentron.studio import (COMPARE_EXAMPLES, DEFAULT_MOTION_STRENGTHS, EXAMPLES, LABELS, MAX_SEED, InputError,
                            ModelInfo, Studio, Update, check_request, motion_label, parse_motion_strengths,
                            preview_image)

log = logging.getLogger("gentron.app")
MODEL_QUEUE = "gentron-model"  # every event that runs the model shares this one slot
PUBLIC_ENDPOINTS = ("generate", "compare_motion")  # the documented API; nothing else is callable by name
PER_SESSION = 2  # model jobs one session may have waiting or running
QUEUE_SIZE = 64  # jobs waiting in all: 32 sessions at PER_SESSION each
CACHE_FILES_PER_RUN = 8  # gradio cache files kept per studio result folder (previews, the result, downloads)
TITLE = "GenTron Studio"
SAME_PRECISION = "same as the transformer"  # the text encoders' choice that follows the transformer's


def settings_panel(info: ModelInfo, studio: Studio, *, generate: bool, video: bool, prefix: str = ""):
    """The settings both tabs share, declared once: λT, seed, resolution, frames and fps, steps, sampler; the
    Generate tab (``generate``) adds λM and the precisions. ``video``: the frame settings start shown. Returns
    the widgets by their API names, plus the dice button."""
    w = SimpleNamespace()
    w.text_guidance = gr.Slider(0, 20, value=info.default_text_guidance, step=0.5, label=LABELS["text_guidance"])
    if generate:
        w.motion_guidance = gr.Slider(0, 3, value=1.0, step=0.1, label=LABELS["motion_guidance"], visible=video)
    with gr.Row(equal_height=True):
        w.seed = gr.Number(0, label=LABELS["seed"], info="the one used is shown here", precision=0, minimum=0,
                           maximum=MAX_SEED, scale=3)
        w.dice = gr.Button("Random seed", scale=1)
    w.resolution = gr.Dropdown(choices=list(info.resolutions), value=info.default_resolution,
                               label=LABELS["resolution"], elem_id=f"{prefix}resolution")
    with gr.Row(visible=video) as w.video_settings:
        w.frames = gr.Slider(2, 32, value=8, step=1, precision=0, label=LABELS["frames"], elem_id=f"{prefix}frames")
        w.fps = gr.Slider(1, 24, value=4, step=1, label=LABELS["fps"])
    w.steps = gr.Slider(1, 200, value=info.default_steps, step=1, precision=0, label=LABELS["steps"],
                        elem_id=f"{prefix}steps")
    w.sampler = gr.Dropdown(list(info.samplers), value=info.default_sampler, label=LABELS["sampler"])
    if generate:
        switch = studio.switch_precision
        fixed = " (fixed at launch: app.py --precision)"
        w.precision = gr.Dropdown(list(info.precisions) if switch else [studio.precision], value=studio.precision,
                                  interactive=switch, label=LABELS["precision"] + (
                                      " (changing it reloads the model)" if switch else fixed))
        towers = [SAME_PRECISION, *info.precisions] if switch else [studio.text_precision]
        w.text_precision = gr.Dropdown(
            towers, value=towers[0], interactive=switch,
            label=LABELS["text_precision"] + (" (T5-XXL is the part to shrink; with bnb4 above, bnb8 here keeps "
                                              "counts right)" if switch else fixed.replace("precision", "text-precision")))
    return w


def build_demo(studio: Studio, queue_size: int = QUEUE_SIZE, per_session: int = PER_SESSION) -> gr.Blocks:
    info = studio.info()  # loads the model: the choices below depend on it
    ui = Handlers(studio)
    video_ok = info.temporal
    modes = ["image", "video"] if video_ok else ["image"]
    start_mode = modes[-1]

    with gr.Blocks(title=TITLE, delete_cache=(300, int(studio.max_age_s))) as demo:
        gr.Markdown(f"# {TITLE}\nText to {'image and video' if video_ok else 'image'} with GenTron diffusion "
                    f"transformers (model `{model_label(info.name)}`). Results are enlarged (nearest neighbour) for "
                    f"display; λT weighs the text, λM the motion (motion-free guidance).")

        # ---- layout: generate ---------------------------------------------------------------------
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=2):
                    mode = gr.Radio(modes, value=start_mode, label=LABELS["mode"])
                    prompt = gr.Textbox(label=LABELS["prompt"], lines=2, placeholder="a green star growing")
                    negative = gr.Textbox("", label=LABELS["negative_prompt"],
                                          placeholder="optional: what to steer away from")
                    with gr.Row():
                        run = gr.Button("Generate", variant="primary")
                        stop = gr.Button("Stop", variant="stop")
                    with gr.Accordion("Settings", open=True):
                        g = settings_panel(info, studio, generate=True, video=start_mode == "video")
                    gr.Examples([[m if video_ok else "image", p] for m, p in EXAMPLES], inputs=[mode, prompt],
                                label="Shapes World prompts", cache_examples=False)
                with gr.Column(scale=3):
                    status = gr.Markdown("Ready.", label="status", elem_id="status")
                    preview = gr.Image(label="Preview: the current clean estimate", format="png", interactive=False,
                                       elem_id="preview")
                    result_video = gr.Video(label="Result", format="mp4", autoplay=True, loop=True, interactive=False,
                                            visible=start_mode == "video", elem_id="result-video")
                    result_image = gr.Image(label="Result", type="filepath", format="png", interactive=False,
                                            visible=start_mode == "image", elem_id="result-image")
                    with gr.Row():
                        files = gr.File(label="Download", file_count="multiple", interactive=False)
                        settings = gr.JSON(label="Settings")

        # ---- layout: compare motion strengths -----------------------------------------------------
        with gr.Tab("Compare motion strengths", visible=video_ok):
            gr.Markdown("One prompt, one seed, the same noise: only λM changes, all in one batch.")
            with gr.Row():
                with gr.Column(scale=2):
                    c_prompt = gr.Textbox(label=LABELS["prompt"], lines=2, placeholder="a green star growing")
                    c_negative = gr.Textbox("", label=LABELS["negative_prompt"], placeholder="optional")
                    c_strengths = gr.Textbox(DEFAULT_MOTION_STRENGTHS, label=LABELS["motion_guidances"])
                    with gr.Row():
                        c_run = gr.Button("Compare", variant="primary")
                        c_stop = gr.Button("Stop", variant="stop")
                    with gr.Accordion("Settings", open=False):
                        c = settings_panel(info, studio, generate=False, video=True, prefix="compare-")
                    gr.Examples([[p] for p in COMPARE_EXAMPLES], inputs=[c_prompt], label="Shapes World prompts",
                                cache_examples=False)
                with gr.Column(scale=3):
                    c_status = gr.Markdown("Ready.", label="status")
                    c_preview = gr.Image(label="Preview: one row per λM", format="png", interactive=False)
                    c_video = gr.Video(label="Side by side", format="mp4", autoplay=True, loop=True,
                                       interactive=False, elem_id="compare-video")
                    c_gallery = gr.Gallery(label="One video per λM", columns=5, height=260, object_fit="contain",
                                           interactive=False)
                    with gr.Row():
                        c_files = gr.File(label="Download", file_count="multiple", interactive=False)
                        c_settings = gr.JSON(label="Settings")

        # ---- layout: API-only inputs and outputs (for /generate's plain keyword signature) --------
        with gr.Group(visible=False):
            api_args = [gr.Textbox(None, label="prompt"), gr.Textbox("", label="negative_prompt"),
                        gr.Number(8 if video_ok else 1, precision=0, label="frames"),
                        gr.Number(info.default_resolution, precision=0, label="resolution"),
                        gr.Number(info.default_steps, precision=0, label="steps"),
                        gr.Number(info.default_text_guidance, label="text_guidance"),
                        gr.Number(1.0, label="motion_guidance"), gr.Number(0, precision=0, label="seed")]
            api_preview = gr.Image(label="preview", format="png")
            api_file = gr.File(label="result")
            api_trigger = gr.Button(visible=False)

        # ---- wiring ---------------------------------------------------------------------------------
        # Model events take their inputs raw (preprocess=False): gradio would round 2.5 frames to 2 or turn a
        # dict into its text; studio.check_request refuses them instead. The other events are private.
        gpu = _zero_gpu()
        model = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1, preprocess=False)
        light = dict(queue=False, api_name=False, api_visibility="private")
        gr.on([run.click, prompt.submit], gpu(ui.generate),
              [mode, prompt, negative, g.frames, g.fps, g.resolution, g.steps, g.text_guidance, g.motion_guidance,
               g.seed, g.sampler, g.precision, g.text_precision],
              [status, preview, result_image, result_video, files, settings, g.seed],
              api_name=False, api_visibility="private", show_progress_on=[result_video, result_image], **model)
        stop.click(ui.stop, None, status, **light)
        g.dice.click(random_seed, None, g.seed, **light)
        mode.change(ui.mode_changed, mode, [g.motion_guidance, g.video_settings, result_video, result_image], **light)

        gr.on([c_run.click, c_prompt.submit], gpu(ui.compare),
              [c_prompt, c_negative, c_strengths, c.seed, c.frames, c.fps, c.resolution, c.steps, c.text_guidance,
               c.sampler],
              [c_status, c_preview, c_video, c_gallery, c_files, c_settings, c.seed],
              api_name="compare_motion", show_progress_on=[c_video], **model)
        c_stop.click(ui.stop, None, c_status, **light)
        c.dice.click(random_seed, None, c.seed, **light)

        api_trigger.click(gpu(ui.api_generate), api_args, [api_preview, api_file], api_name="generate", **model)

    demo.queue(default_concurrency_limit=1, max_size=queue_size, api_open=False)  # queued events only by the queue
    ui.demo = demo
    _exact_input_counts(demo)
    _limit_per_session(demo, per_session)
    return demo


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


class Handlers:
    """The event handlers: Studio updates in, component values out; a refused request -> one log line and a
    gr.Error with the message (no traceback: that is kept for real faults)."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.demo: gr.Blocks | None = None  # set by build_demo: its cache is trimmed as runs arrive

    def generate(self, mode: str, prompt: str, negative_prompt: str, frames: int, fps: float, resolution: int,
                 steps: int, text_guidance: float, motion_guidance: float, seed: int | None, sampler: str,
                 precision: str, text_precision: str = SAME_PRECISION, request: gr.Request = None,
                 progress=gr.Progress()):
        key = _key(request)
        try:
            check_request({"mode": mode}, self.studio.fields())
        except InputError as e:
            raise _refused("the Generate tab", key, e) from None
        video = mode == "video"
        seed = random_seed() if seed is None else seed
        text_precision = None if text_precision == SAME_PRECISION else text_precision
        switching = isinstance(precision, str) and self.studio.switch_precision and (
            precision, text_precision or precision) != (self.studio.precision, self.studio.text_precision)
        if switching and precision in self.studio.precisions():
            towers = f" (text encoders {text_precision})" if text_precision not in (None, precision) else ""
            yield f"Loading the model at precision {precision}{towers}…", *[gr.skip()] * 6
        updates = self._engine("the Generate tab", key, self.studio.generate, prompt=prompt,
                               negative_prompt=negative_prompt, frames=frames if video else 1, resolution=resolution,
                               steps=steps, text_guidance=text_guidance, motion_guidance=motion_guidance, seed=seed,
                               sampler=sampler, fps=fps, precision=precision, text_precision=text_precision)
        last = None
        for last in updates:
            progress((last.step, last.total), desc="sampling", unit="steps")
            if last.result is None:
                yield (f"Step {last.step} of {last.total} · seed {seed}",
                       gr.skip() if last.preview is None else preview_image(last.preview), *[gr.skip()] * 5)
            elif last.result.is_video:
                yield (_done(last, seed), gr.skip(), gr.update(value=None, visible=False),
                       gr.update(value=str(last.result.path), visible=True), _paths(last.result.files),
                       last.result.settings, seed)
            else:
                yield (_done(last, seed), gr.skip(), gr.update(value=str(last.result.path), visible=True),
                       gr.update(value=None, visible=False), _paths(last.result.files), last.result.settings, seed)
        if last is None or last.result is None:
            yield _stopped(last), *[gr.skip()] * 6

    def compare(self, prompt: str, negative_prompt: str, motion_guidances: str, seed: int | None, frames: int,
                fps: float, resolution: int, steps: int, text_guidance: float, sampler: str,
                request: gr.Request = None, progress=gr.Progress()):
        key = _key(request)
        seed = random_seed() if seed is None else seed
        updates = self._engine("/compare_motion", key, self.studio.compare, prompt=prompt,
                               motion_guidances=motion_guidances, negative_prompt=negative_prompt, frames=frames,
                               resolution=resolution, steps=steps, text_guidance=text_guidance, seed=seed,
                               sampler=sampler, fps=fps)
        labels = None
        last = None
        for last in updates:
            labels = labels or [motion_label(v) for v in parse_motion_strengths(motion_guidances)]
            progress((last.step, last.total), desc="sampling", unit="steps")
            if last.result is None:
                yield (f"Step {last.step} of {last.total} · seed {seed}",
                       gr.skip() if last.preview is None else preview_image(last.preview, labels, columns=8),
                       *[gr.skip()] * 5)
            else:
                r = last.result
                yield (_done(last, seed), gr.skip(), str(r.path), [(str(p), label) for p, label in r.parts],
                       _paths(r.files), r.settings, seed)
        if last is None or last.result is None:
            yield _stopped(last), *[gr.skip()] * 6

    def api_generate(self, prompt: str, negative_prompt: str = "", frames: int = 8, resolution: int | None = None,
                     steps: int | None = None, text_guidance: float | None = None, motion_guidance: float = 1.0,
                     seed: int = 0, request: gr.Request = None, progress=gr.Progress()):
        """Text to an image (frames=1: a PNG) or a video (an MP4). Streams (preview, None) every few
        steps, then ends with (None, the file)."""
        for update in self._engine("/generate", _key(request), self.studio.generate, prompt=prompt,
                                   negative_prompt=negative_prompt, frames=frames, resolution=resolution, steps=steps,
                                   text_guidance=text_guidance, motion_guidance=motion_guidance, seed=seed):
            progress((update.step, update.total), desc="sampling", unit="steps")
            if update.preview is not None:
                yield preview_image(update.preview), None
            elif update.result is not None:
                # None, not the last preview again: re-sending the same image makes gradio rewrite its cached
                # file while a client may still be downloading it
                yield None, str(update.result.path)
        # a stopped or cancelled run simply ends the stream without a file

    def stop(self, request: gr.Request = None):
        return "Stopping…" if self.studio.stop(_key(request)) else gr.skip()

    @staticmethod
    def mode_changed(mode: str):
        video = mode == "video"
        return (gr.update(visible=video), gr.update(visible=video), gr.update(visible=video),
                gr.update(visible=not video))

    def _engine(self, what: str, key: str, start: Callable[..., Iterator[Update]], **kwargs) -> Iterator[Update]:
        """A Studio stream; a refused request becomes one log line and a gr.Error, and a stopped run just ends.

        A preview equal to the last one sent is dropped: it says nothing new, and gradio would rewrite the same
        cached file while a client may still be downloading it (a truncated download fails the client's stream)."""
        import numpy as np

        from gentron.pipeline import Interrupted

        if self.demo is not None:
            trim_cache(self.demo, self.studio.max_runs * CACHE_FILES_PER_RUN)
        sent = None
        try:
            for update in start(key=key, **kwargs):  # the run is stopped by its session's Stop
                if update.preview is not None:
                    if sent is not None and np.array_equal(update.preview, sent):
                        update = update._replace(preview=None)
                    else:
                        sent = update.preview
                yield update
        except ValueError as e:
            raise _refused(what, key, e) from None
        except Interrupted:
            return


def _refused(what: str, key: str, error: Exception) -> gr.Error:
    """One line in the log (where, whose, why) and the error the client sees."""
    log.info("refused %s (session %s): %s", what, key[:8], error)
    return gr.Error(str(error), print_exception=False)


def _engine(start: Callable[..., Iterator[Update]], **kwargs) -> Iterator[Update]:
    """A bare Studio stream through the handlers' filter (no demo, no session)."""
    return Handlers(None)._engine("a stream", "default", start, **kwargs)


def _key(request: gr.Request | None) -> str:
    """Stop buttons find their run by the browser session (one run per session at a time)."""
    return getattr(request, "session_hash", None) or "default"


def _paths(paths) -> list[str]:
    return [str(p) for p in paths]


def _done(last: Update, seed: int) -> str:
    return f"Done: {last.total} steps in {last.result.seconds:.1f} s · seed {seed}"


def _stopped(last: Update | None) -> str:
    where = f" at step {last.step} of {last.total}" if last is not None else ""
    return f"Stopped{where}. Ready for the next run."


def _zero_gpu() -> Callable:
    """spaces.GPU on Hugging Face ZeroGPU hardware; elsewhere the functions run as they are."""
    if os.environ.get("SPACES_ZERO_GPU"):
        try:
            import spaces

            return spaces.GPU
        except ImportError:
            pass
    return lambda fn: fn


# ---- sharing one server: exact inputs, fair queueing, named endpoints, a bounded cache ------------
def _exact_input_counts(demo: gr.Blocks) -> None:
    """A request with too few or too many values is refused with a message (gradio raises a bare ValueError, a
    generic error to the client and a traceback in the log, for too few, and ignores extras)."""
    def validate_inputs(block_fn, inputs):
        if len(inputs) != len(block_fn.inputs):
            names = ", ".join(getattr(b, "label", None) or type(b).__name__ for b in block_fn.inputs)
            raise _refused(f"/{block_fn.api_name}", "-", ValueError(
                f"this endpoint takes {len(block_fn.inputs)} values ({names}); got {len(inputs)}"))

    demo.validate_inputs = validate_inputs


def _limit_per_session(demo: gr.Blocks, limit: int) -> None:
    """At most ``limit`` model jobs waiting or running per session, so one client cannot fill the queue: the
    one beyond is refused at once (gradio's own check is only the queue's total size)."""
    import asyncio

    from gradio import route_utils

    queue, push, lock = demo._queue, demo._queue.push, asyncio.Lock()

    def held(session: str) -> int:
        waiting = queue.event_queue_per_concurrency_id.get(MODEL_QUEUE)
        events = [*(waiting.queue if waiting else []), *(e for job in queue.active_jobs if job for e in job)]
        return sum(e.session_hash == session and e.concurrency_id == MODEL_QUEUE for e in events)

    async def push_limited(body, request, username):
        async with lock:  # the count and the push as one step: two quick submits cannot both slip in
            try:
                fn = route_utils.get_fn(demo, None, body)
            except Exception:  # noqa: BLE001: gradio's own push reports a bad fn_index
                return await push(body, request, username)
            if fn.concurrency_id == MODEL_QUEUE and body.session_hash and held(body.session_hash) >= limit:
                message = (f"You already have {limit} jobs waiting or running: each person may queue {limit} at "
                           f"a time. Try again when one is done.")
                log.info("refused /%s (session %s): %d jobs held", fn.api_name, body.session_hash[:8], limit)
                # as a validation error (422): gradio_client shows its message, a full queue's (503) it replaces
                return False, [{"__type__": "validate", "is_valid": False, "parameter_name": "jobs per session",
                                "message": message}], "validator_error"
            return await push(body, request, username)

    queue.push = push_limited


class DocumentedOnly:
    """ASGI middleware: gradio answers /gradio_api/call/<name> (and /run, /api) for any event, documented or
    not (a private event keeps a name); only ``names`` are let through. The page's own events go by index: queued
    ones through /gradio_api/queue/join, unqueued ones (Stop, the dice, the mode) through /gradio_api/run/predict,
    which the queue's ``api_open=False`` closes to every queued event."""

    ROUTE = re.compile(r"^(?:.*)/gradio_api/(?:call/v2|call|run|api)/([^/]+)")
    PAGE = re.compile(r"^(?:.*)/gradio_api/run/predict/?$")

    def __init__(self, app, names: tuple[str, ...]):
        self.app, self.names = app, set(names)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        match = self.ROUTE.match(path) if not self.PAGE.match(path) else None
        if match and match.group(1) not in self.names:
            log.info("refused %s: not a documented endpoint", scope["path"])
            body = json.dumps({"detail": f"no endpoint named {match.group(1)!r}; this app's endpoints are "
                                         f"{', '.join('/' + n for n in sorted(self.names))}"}).encode()
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def cache_files(demo: gr.Blocks) -> list[Path]:
    """The files gradio put in its cache for this app (served results, previews), oldest first."""
    files = []
    for temp_set in demo.temp_file_sets:
        for name in list(temp_set):
            try:
                files.append((Path(name).lstat().st_mtime, Path(name)))
            except FileNotFoundError:
                temp_set.discard(name)
    return [p for _, p in sorted(files)]


def trim_cache(demo: gr.Blocks, keep: int) -> int:
    """Remove all but the newest ``keep`` of this app's cache files (and their folders once empty)."""
    files = cache_files(demo)
    old = files[:max(0, len(files) - keep)]
    for path in old:
        path.unlink(missing_ok=True)
        for temp_set in demo.temp_file_sets:
            temp_set.discard(str(path))
        try:
            path.parent.rmdir()  # gradio keeps each file in a folder named by its hash
        except OSError:
            pass
    return len(old)


def remove_on_exit(demo: gr.Blocks, studio: Studio) -> None:
    """The studio's outputs and this app's cache files go at exit, on SIGTERM and SIGINT as on a normal one
    (by default SIGTERM ends Python without running its exit handlers)."""
    def clean() -> None:
        trim_cache(demo, 0)
        studio.close()

    def on_signal(signum, frame):
        log.info("signal %d: removing the outputs and the cache, then exiting", signum)
        clean()
        raise SystemExit(128 + signum)

    atexit.register(clean)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


# ---- hosting ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="pipeline folder, hub id or random:PRESET (default: $GENTRON_MODEL, else the built-in model)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None,
                   help="port (default: $GRADIO_SERVER_PORT, else 7860 or the next free one)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", default=os.environ.get("GENTRON_PRECISION") or None,
                   help="the transformer's precision / quantization for every request (default: $GENTRON_PRECISION, "
                   "else the device's default)")
    p.add_argument("--text-precision", default=os.environ.get("GENTRON_TEXT_PRECISION") or None,
                   help="the text encoders' (default: $GENTRON_TEXT_PRECISION, else as --precision)")
    p.add_argument("--local", action="store_true",
                   help="one person's studio: the page may switch precision (a reload, which changes every user's "
                   "results: never on a shared server)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the transformer: later requests run faster, each new resolution, frame count "
                   "or comparison size first compiles for 30-50 s on a 2-core CPU (default: $GENTRON_COMPILE, else off)")
    return p.parse_args(argv)


def serve(studio: Studio, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          clean_on_signals: bool = False, **launch_kwargs):
    """Build the app over ``studio`` and start serving; returns the Blocks (launch's own return is dropped).
    ``clean_on_signals``: remove the outputs and the cache on SIGTERM / SIGINT (the main thread of a server
    process only)."""
    from starlette.middleware import Middleware

    demo = build_demo(studio)
    if clean_on_signals:
        remove_on_exit(demo, studio)
    app_kwargs = {"middleware": [Middleware(DocumentedOnly, names=PUBLIC_ENDPOINTS)]}
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(studio.outputs_dir)],
                max_file_size=0, app_kwargs=app_kwargs, **launch_kwargs)  # the app takes no uploads
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes of the page, one line each
    from gentron.compilation import compile_requested

    studio = Studio(args.model, device=args.device, compile=compile_requested(args.compile),
                    precision=args.precision, text_precision=args.text_precision, switch_precision=args.local)
    try:
        studio.info()  # load now: a bad --model or --precision fails here with a clear message
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    serve(studio, host=args.host, port=args.port, share=args.share, clean_on_signals=True)


if __name__ == "__main__":
    main()
