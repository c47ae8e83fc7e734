"""GenTron Studio: a web UI for text-to-image and text-to-video with motion-free guidance.

    python app.py [--model FOLDER|HUB_ID|random:tiny] [--host 127.0.0.1] [--port 7860]

The model is --model, else $GENTRON_MODEL, else the built-in assets/gentron-shapes. The server
listens on 127.0.0.1 unless --host (or $GRADIO_SERVER_NAME) says otherwise; --share is off by default.

This file is wiring only (layout, then events, then the thin handlers); gentron.studio.Studio
holds the logic. Nothing heavy is imported here: the model loads when the app is built.
"""
from __future__ import annotations

import argparse
import os
import random
from typing import Callable, Iterator

import gradio as gr

from gentron.loading import model_label
from gentron.studio import (COMPARE_EXAMPLES, DEFAULT_MOTION_STRENGTHS, EXAMPLES, MAX_SEED, Studio,
                            Update, motion_label, parse_motion_strengths, preview_image)

MODEL_QUEUE = "gentron-model"  # every event that runs the model shares this one slot
TITLE = "GenTron Studio"
SAME_PRECISION = "same as the transformer"  # the text encoders' choice that follows the transformer's


def build_demo(studio: Studio) -> gr.Blocks:
    info = studio.info()  # loads the model: the choices below depend on it
    ui = Handlers(studio)
    video_ok = info.temporal
    modes = ["image", "video"] if video_ok else ["image"]
    start_mode = modes[-1]
    size = dict(choices=list(info.resolutions), value=info.default_resolution, label="Resolution (pixels a side)")

    with gr.Blocks(title=TITLE, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\nText to {'image and video' if video_ok else 'image'} with GenTron diffusion "
                    f"transformers (model `{model_label(info.name)}`). Results are enlarged (nearest neighbour) for "
                    f"display; λT weighs the text, λM the motion (motion-free guidance).")

        # ---- layout: generate ---------------------------------------------------------------------
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=2):
                    mode = gr.Radio(modes, value=start_mode, label="Mode")
                    prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a green star growing")
                    negative = gr.Textbox("", label="Negative prompt", placeholder="optional: what to steer away from")
                    with gr.Row():
                        run = gr.Button("Generate", variant="primary")
                        stop = gr.Button("Stop", variant="stop")
                    with gr.Accordion("Settings", open=True):
                        text_guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Text guidance λT")
                        motion_guidance = gr.Slider(0, 3, value=1.0, step=0.1, label="Motion guidance λM",
                                                    visible=start_mode == "video")
                        with gr.Row(equal_height=True):
                            seed = gr.Number(0, label="Seed (the one used is shown here)", precision=0, minimum=0,
                                             maximum=MAX_SEED, scale=3)
                            dice = gr.Button("Random seed", scale=1)
                        resolution = gr.Dropdown(**size, elem_id="resolution")
                        with gr.Row(visible=start_mode == "video") as video_settings:
                            frames = gr.Slider(2, 32, value=8, step=1, precision=0, label="Frames", elem_id="frames")
                            fps = gr.Slider(1, 24, value=4, step=1, label="Frames per second")
                        steps = gr.Slider(1, 200, value=25, step=1, precision=0, label="Steps", elem_id="steps")
                        sampler = gr.Dropdown(list(info.samplers), value=info.default_sampler, label="Sampler")
                        precision = gr.Dropdown(list(info.precisions), value=studio.precision,
                                                label="Precision / quantization (changing it reloads the model)")
                        text_precision = gr.Dropdown(
                            [SAME_PRECISION, *info.precisions], value=SAME_PRECISION,
                            label="Text encoders' precision (T5-XXL is the part to shrink; with bnb4 above, bnb8 "
                            "here keeps counts right)")
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
                    c_prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a green star growing")
                    c_negative = gr.Textbox("", label="Negative prompt", placeholder="optional")
                    c_strengths = gr.Textbox(DEFAULT_MOTION_STRENGTHS, label="Motion strengths λM (comma-separated)")
                    with gr.Row():
                        c_run = gr.Button("Compare", variant="primary")
                        c_stop = gr.Button("Stop", variant="stop")
                    with gr.Accordion("Settings", open=False):
                        c_text_guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Text guidance λT")
                        with gr.Row(equal_height=True):
                            c_seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED, scale=3)
                            c_dice = gr.Button("Random seed", scale=1)
                        c_resolution = gr.Dropdown(**size)
                        with gr.Row():
                            c_frames = gr.Slider(2, 32, value=8, step=1, precision=0, label="Frames")
                            c_fps = gr.Slider(1, 24, value=4, step=1, label="Frames per second")
                        c_steps = gr.Slider(1, 200, value=25, step=1, precision=0, label="Steps")
                        c_sampler = gr.Dropdown(list(info.samplers), value=info.default_sampler, label="Sampler")
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
                        gr.Number(25, precision=0, label="steps"), gr.Number(7.5, label="text_guidance"),
                        gr.Number(1.0, label="motion_guidance"), gr.Number(0, precision=0, label="seed")]
            api_preview = gr.Image(label="preview", format="png")
            api_file = gr.File(label="result")
            api_trigger = gr.Button(visible=False)

        # ---- wiring ---------------------------------------------------------------------------------
        gpu = _zero_gpu()
        model = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
        light = dict(queue=False, api_visibility="private")
        gr.on([run.click, prompt.submit], gpu(ui.generate),
              [mode, prompt, negative, frames, fps, resolution, steps, text_guidance, motion_guidance, seed, sampler,
               precision, text_precision],
              [status, preview, result_image, result_video, files, settings, seed],
              api_name="ui_generate", api_visibility="private", show_progress_on=[result_video, result_image], **model)
        stop.click(ui.stop, None, status, **light)
        dice.click(random_seed, None, seed, **light)
        mode.change(ui.mode_changed, mode, [motion_guidance, video_settings, result_video, result_image], **light)

        gr.on([c_run.click, c_prompt.submit], gpu(ui.compare),
              [c_prompt, c_negative, c_strengths, c_seed, c_frames, c_fps, c_resolution, c_steps, c_text_guidance,
               c_sampler],
              [c_status, c_preview, c_video, c_gallery, c_files, c_settings, c_seed],
              api_name="compare_motion", show_progress_on=[c_video], **model)
        c_stop.click(ui.stop, None, c_status, **light)
        c_dice.click(random_seed, None, c_seed, **light)

        api_trigger.click(gpu(ui.api_generate), api_args, [api_preview, api_file], api_name="generate", **model)

    demo.queue(default_concurrency_limit=1, max_size=16)
    return demo


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


class Handlers:
    """The event handlers: Studio updates in, component values out; the engine's ValueError -> gr.Error."""

    def __init__(self, studio: Studio):
        self.studio = studio

    def generate(self, mode: str, prompt: str, negative_prompt: str, frames: int, fps: float, resolution: int,
                 steps: int, text_guidance: float, motion_guidance: float, seed: int | None, sampler: str,
                 precision: str, text_precision: str = SAME_PRECISION, request: gr.Request = None,
                 progress=gr.Progress()):
        video = mode == "video"
        seed = random_seed() if seed is None else seed
        text_precision = None if text_precision == SAME_PRECISION else text_precision
        if (precision, text_precision or precision) != (self.studio.precision, self.studio.text_precision):
            towers = f" (text encoders {text_precision})" if text_precision not in (None, precision) else ""
            yield f"Loading the model at precision {precision}{towers}…", *[gr.skip()] * 6
        updates = _engine(self.studio.generate, prompt=prompt, negative_prompt=negative_prompt,
                          frames=frames if video else 1, resolution=resolution, steps=steps,
                          text_guidance=text_guidance, motion_guidance=motion_guidance, seed=seed, sampler=sampler,
                          fps=fps, precision=precision, text_precision=text_precision, key=_key(request))
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
        seed = random_seed() if seed is None else seed
        try:
            labels = [motion_label(v) for v in parse_motion_strengths(motion_guidances)]
        except ValueError as e:
            raise gr.Error(str(e)) from None
        updates = _engine(self.studio.compare, prompt=prompt, motion_guidances=motion_guidances,
                          negative_prompt=negative_prompt, frames=frames, resolution=resolution, steps=steps,
                          text_guidance=text_guidance, seed=seed, sampler=sampler, fps=fps, key=_key(request))
        last = None
        for last in updates:
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
                     steps: int = 25, text_guidance: float = 7.5, motion_guidance: float = 1.0, seed: int = 0,
                     request: gr.Request = None, progress=gr.Progress()):
        """Text to an image (frames=1: a PNG) or a video (an MP4). Streams (preview, None) every few
        steps, then ends with the file (the preview output left as it was)."""
        for update in _engine(self.studio.generate, prompt=prompt, negative_prompt=negative_prompt, frames=frames,
                              resolution=resolution, steps=steps, text_guidance=text_guidance,
                              motion_guidance=motion_guidance, seed=seed, key=_key(request)):
            progress((update.step, update.total), desc="sampling", unit="steps")
            if update.preview is not None:
                yield preview_image(update.preview), None
            elif update.result is not None:
                # the preview is unchanged: skip it, since re-sending the same image makes gradio rewrite
                # its cached file while a client may still be downloading it
                yield gr.skip(), str(update.result.path)
        # a stopped or cancelled run simply ends the stream without a file

    def stop(self, request: gr.Request = None):
        return "Stopping…" if self.studio.stop(_key(request)) else gr.skip()

    @staticmethod
    def mode_changed(mode: str):
        video = mode == "video"
        return (gr.update(visible=video), gr.update(visible=video), gr.update(visible=video),
                gr.update(visible=not video))


def _engine(start: Callable[..., Iterator[Update]], **kwargs) -> Iterator[Update]:
    """A Studio stream; the engine's ValueError becomes a gr.Error, and a stopped run just ends.

    A preview equal to the last one sent is dropped: it says nothing new, and gradio would rewrite the same
    cached file while a client may still be downloading it (a truncated download fails the client's stream)."""
    import numpy as np

    from gentron.pipeline import Interrupted

    sent = None
    try:
        for update in start(**kwargs):
            if update.preview is not None:
                if sent is not None and np.array_equal(update.preview, sent):
                    update = update._replace(preview=None)
                else:
                    sent = update.preview
            yield update
    except ValueError as e:
        raise gr.Error(str(e)) from None
    except Interrupted:
        return


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
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the transformer: later requests run faster, each new resolution, frame count "
                   "or comparison size first compiles for 30-50 s on a 2-core CPU (default: $GENTRON_COMPILE, else off)")
    return p.parse_args(argv)


def serve(studio: Studio, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **launch_kwargs):
    """Build the app over ``studio`` and start serving; returns the Blocks (launch's own return is dropped)."""
    demo = build_demo(studio)
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(studio.outputs_dir)],
                **launch_kwargs)
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from gentron.compilation import compile_requested

    studio = Studio(args.model, device=args.device, compile=compile_requested(args.compile))
    try:
        studio.info()  # load now: a bad --model fails here with a clear message
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    serve(studio, host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    main()
