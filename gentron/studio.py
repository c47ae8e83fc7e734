"""The engine side of the web app (app.py): one loaded pipeline, one generation at a time, streamed.

``Studio`` owns the pipeline (loaded once, lazily, under a lock), runs a generation on a worker
thread and hands back a stream of ``Update(step, total, preview, result)``: ``preview`` is the
decoded clean estimate on preview steps, ``result`` is set on the last update only. ``stop(key)``
halts a run within one step. Results go into a temp folder of its own, one sub-folder per run
(PNG for images, MP4 for videos, upscaled for display, the settings JSON beside them); old runs
are removed as new ones arrive (bounded count and age).

No gradio here, and nothing heavy at import: torch and the engine load on first use, so
``import app`` stays fast.
"""
from __future__ import annotations

import atexit
import json
import math
import queue
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

MAX_SEED = 2**32 - 1  # gentron.pipeline.MAX_SEED, repeated so this module imports without torch
BASE_PRECISIONS = ("none", "bf16")  # offered when gentron.quantization is not there
DEFAULT_MOTION_STRENGTHS = "0, 0.5, 1.0, 1.5, 2.0"
MAX_COMPARE = 8  # λM values in one comparison (they run as one batch)
DISPLAY_SIZE = 256  # results are upscaled (nearest) to about this many pixels a side
PREVIEW_COLUMNS = 8  # frames per row in a preview sheet

# Shapes World prompts: (mode, prompt)
EXAMPLES = [  # prompts the built-in model passed in its CompBench run (runs/eval_s17, docs/evaluation.md; "three
    # yellow stars" on one of its two seeds there)
    ("image", "a big yellow star"),
    ("image", "a big red square below a big blue circle"),
    ("image", "three yellow stars"),
    ("image", "two yellow triangles"),
    ("video", "a green circle growing"),
    ("video", "a purple square shrinking"),
]
COMPARE_EXAMPLES = [  # motions the built-in model has learnt (it does not yet move things the captioned way)
    "a green circle growing",
    "a purple square shrinking",
    "a purple triangle standing still",
]


class Update(NamedTuple):
    step: int  # steps done so far
    total: int
    preview: np.ndarray | None  # (B, F, H, W, 3) uint8 clean estimate on preview steps, else None
    result: Result | None  # on the last update only


@dataclass
class Result:
    path: Path  # the PNG (image) or MP4 (video); for a comparison, the tiled and labelled MP4
    settings: dict[str, Any]  # what made it, as written to settings_path
    settings_path: Path
    files: list[Path]  # everything to download
    parts: list[tuple[Path, str]] = field(default_factory=list)  # comparison: (MP4, label) per λM
    seconds: float = 0.0

    @property
    def is_video(self) -> bool:
        return self.path.suffix == ".mp4"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    temporal: bool  # can make videos
    size_multiple: int
    default_resolution: int
    resolutions: tuple[int, ...]
    precisions: tuple[str, ...]
    default_sampler: str  # the sampler the model's folder ships
    samplers: tuple[str, ...]  # those its objective takes (epsilon or flow)


def precision_modes(device: str = "cpu") -> list[str]:
    """"none" and "bf16", or what gentron.quantization offers on ``device`` when that module is there."""
    try:
        from .quantization import available_modes
    except ImportError:
        return list(BASE_PRECISIONS)
    return list(dict.fromkeys(["none", *available_modes(device)]))


def parse_motion_strengths(text: str | list[float]) -> list[float]:
    """"0, 0.5, 1" -> [0.0, 0.5, 1.0]; the engine checks the range."""
    if isinstance(text, str):
        items = [s for s in text.replace(";", ",").replace(" ", ",").split(",") if s]
        try:
            values = [float(s) for s in items]
        except ValueError:
            raise ValueError(f"motion strengths must be numbers separated by commas, e.g. "
                             f"{DEFAULT_MOTION_STRENGTHS!r}; got {text!r}") from None
    else:
        values = [float(v) for v in text]
    if not 1 <= len(values) <= MAX_COMPARE:
        raise ValueError(f"give 1 to {MAX_COMPARE} motion strengths to compare, got {len(values)}")
    return values


def display_upscale(resolution: int) -> int:
    """Nearest-neighbour factor that brings a side to about DISPLAY_SIZE pixels."""
    return max(1, DISPLAY_SIZE // max(1, resolution))


def motion_label(value: float) -> str:
    return f"λM = {value:g}"


def contact_sheet(frames: np.ndarray, labels: list[str] | None = None, upscale: int = 1,
                  columns: int = PREVIEW_COLUMNS) -> np.ndarray:
    """(B, F, H, W, 3) uint8 -> one image: each sample's frames in rows of ``columns``, samples
    stacked top to bottom, each over its label when given."""
    frames = np.asarray(frames)
    if frames.ndim == 4:
        frames = frames[None]
    b, f, h, w, _ = frames.shape
    frames = frames.repeat(upscale, axis=2).repeat(upscale, axis=3)
    h, w, gap = h * upscale, w * upscale, 2
    cols, rows = min(f, columns), math.ceil(f / columns)
    blocks = []
    for i, sample in enumerate(frames):
        sheet = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
        for j, frame in enumerate(sample):
            r, c = divmod(j, cols)
            sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = frame
        blocks.append(_with_label(sheet, labels[i]) if labels else sheet)
    width = max(x.shape[1] for x in blocks)
    blocks = [np.pad(x, ((0, gap), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in blocks]
    return np.concatenate(blocks)[:-gap]


def preview_image(preview: np.ndarray, labels: list[str] | None = None, columns: int = 4,
                  max_width: int = 1024) -> np.ndarray:
    """A preview (B, F, H, W, 3) as one sheet of ``columns`` frames a row, about ``max_width`` pixels wide."""
    _, f, _, w, _ = preview.shape
    upscale = max(1, min(display_upscale(w), max_width // (min(f, columns) * w)))
    return contact_sheet(preview, labels, upscale, columns)


def labelled_tiles(frames: np.ndarray, labels: list[str], upscale: int = 1) -> np.ndarray:
    """(B, F, H, W, 3) -> (F, H', B*W', 3): the samples side by side, each over its label, per frame."""
    frames = np.asarray(frames).repeat(upscale, axis=2).repeat(upscale, axis=3)
    gap = 4
    columns = []
    for sample, label in zip(frames, labels):
        bar = _with_label(np.full((0, sample.shape[2], 3), 255, np.uint8), label)
        columns.append(np.concatenate([sample, np.broadcast_to(bar, (len(sample), *bar.shape))], axis=1))
        columns.append(np.full((len(sample), columns[-1].shape[1], gap, 3), 255, np.uint8))
    return np.ascontiguousarray(np.concatenate(columns[:-1], axis=2))


def _with_label(image: np.ndarray, label: str) -> np.ndarray:
    """``image`` over a white bar with the label in black (below: the app's labels cover the top left)."""
    from PIL import Image, ImageDraw

    font, text = _label_font(label)
    bar_h = 24
    bar = Image.new("RGB", (image.shape[1], bar_h), "white")
    ImageDraw.Draw(bar).text((4, bar_h // 2), text, font=font, fill="black", anchor="lm")
    return np.concatenate([image, np.asarray(bar)])


def _label_font(label: str):
    from PIL import ImageFont

    try:  # DejaVu has λ; Pillow's built-in font does not
        return ImageFont.truetype("DejaVuSans.ttf", 15), label
    except OSError:
        return ImageFont.load_default(size=15), label.replace("λM", "lambda_M")


def _as_int(value: Any) -> Any:
    """25.0 -> 25 (web forms send floats); anything else is left for the engine to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _preview_every(steps: Any) -> int:
    """A preview every few steps: about five per run, at least every fifth step."""
    return max(1, min(5, steps // 5)) if isinstance(steps, int) else 5


class Studio:
    """The app's engine: a lazily loaded pipeline and streamed, stoppable generations.

    model: a folder, a hub id, ``random:PRESET`` or None ($GENTRON_MODEL, else the built-in one).
    """

    def __init__(self, model: str | None = None, device: str | None = None, outputs_dir: str | Path | None = None,
                 max_runs: int = 32, max_age_s: float = 3600.0, compile: bool = False):
        self.model = model
        self.compile = compile  # torch.compile the transformer (gentron.compilation): 30-50 s per new shape on 2 cores
        self.device = device
        if outputs_dir is None:
            outputs_dir = tempfile.mkdtemp(prefix="gentron-studio-")
            atexit.register(shutil.rmtree, outputs_dir, ignore_errors=True)
        self.outputs_dir = Path(outputs_dir)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.max_runs, self.max_age_s = max_runs, max_age_s
        self._pipe = None
        self._pipe_modes: tuple[str, str] | None = None  # (transformer, text towers) of the loaded pipeline
        self._precisions: list[str] | None = None
        self.model_name = str(model)  # what was loaded, once it is
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one pipeline call at a time
        self._stops: dict[str, threading.Event] = {}
        self.last_outcome: tuple[str, int, int] | None = None  # ("done" | "stopped" | "error", step, total)

    # ---- the model ------------------------------------------------------------------------------
    def pipeline(self, precision: str | None = None, text_precision: str | None = None):
        """The loaded pipeline with its transformer at ``precision`` and its text towers at ``text_precision``
        (None: the same as the transformer); neither given: the loaded one, else the device's default. Loads it
        on first use, and again when either changes."""
        precision, text_precision = self._modes(precision, text_precision)
        with self._load_lock:
            if self._pipe is None or self._pipe_modes != (precision, text_precision):
                for name, mode in (("precision", precision), ("text_precision", text_precision)):
                    if mode not in self.precisions():
                        raise ValueError(f"{name} must be one of {self.precisions()}, got {mode!r}")
                self._pipe = None  # let the old one go before loading the next
                self._pipe = self._load(precision, text_precision)
                self._pipe_modes = (precision, text_precision)
            return self._pipe

    def _modes(self, precision: str | None, text_precision: str | None) -> tuple[str, str]:
        """(transformer, text towers) modes asked for: neither given keeps the loaded ones; the towers follow the
        transformer unless named."""
        if precision is None and text_precision is None:
            return self.precision, self.text_precision
        precision = precision or self.precision
        return precision, text_precision or precision

    def _load(self, precision: str, text_precision: str):
        import torch

        from .loading import load_pipeline, resolve_model

        self.model_name = resolve_model(self.model)
        if self._has_quantization():
            return load_pipeline(self.model, self.resolved_device, precision, compile=self.compile,
                                 quantize_text=text_precision)
        # without gentron.quantization the modes are "none" and "bf16": a plain cast
        pipe = load_pipeline(self.model, self.resolved_device, "none", compile=self.compile)
        for part, mode in (("transformer", precision), ("text_encoder", text_precision),
                           ("text_encoder_2", text_precision)):
            if mode == "bf16" and getattr(pipe, part, None) is not None:
                torch.nn.Module.to(getattr(pipe, part), torch.bfloat16)  # each casts its inputs itself
        return pipe

    @staticmethod
    def _has_quantization() -> bool:
        try:
            from . import quantization  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def precision(self) -> str:
        """The transformer's precision in the loaded pipeline; before any, the device's default
        (gentron.quantization)."""
        if self._pipe_modes:
            return self._pipe_modes[0]
        try:
            from .quantization import default_mode
        except ImportError:
            return "none"
        mode = default_mode(self.resolved_device)
        return mode if mode in self.precisions() else "none"

    @property
    def text_precision(self) -> str:
        """The text towers' precision in the loaded pipeline; before any, the same as ``precision``."""
        return self._pipe_modes[1] if self._pipe_modes else self.precision

    @property
    def resolved_device(self) -> str:
        if self.device is None:
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def precisions(self) -> list[str]:
        if self._precisions is None:
            self._precisions = precision_modes(self.resolved_device)
        return self._precisions

    def info(self) -> ModelInfo:
        """What the loaded model can do (loads it if needed)."""
        pipe = self.pipeline(self.precision, self.text_precision)
        m, d = pipe.size_multiple, pipe.default_resolution
        sizes = sorted({s for s in (d, 2 * d) if s % m == 0 and s <= 2048} or {d})
        return ModelInfo(name=self.model_name, temporal=bool(pipe.transformer.config.temporal),
                         size_multiple=m, default_resolution=d, resolutions=tuple(sizes),
                         precisions=tuple(self.precisions()), default_sampler=pipe.default_sampler,
                         samplers=tuple(pipe.samplers))

    # ---- generation -----------------------------------------------------------------------------
    def generate(self, prompt: str, negative_prompt: str = "", frames: int = 8, resolution: int | None = None,
                 steps: int = 25, text_guidance: float = 7.5, motion_guidance: float = 1.0, seed: int | None = 0,
                 sampler: str | None = None, fps: float = 4.0, precision: str | None = None,
                 text_precision: str | None = None, key: str = "default") -> Iterator[Update]:
        """One image (frames=1, a PNG) or video (an MP4), streamed as updates.

        Raises ValueError (the engine's message) for bad input and ``Interrupted`` after ``stop(key)``.
        ``precision`` (the transformer's) None keeps the loaded one, another reloads the model at that precision;
        ``text_precision`` (the text towers') None follows ``precision``; neither given keeps the loaded model.
        """
        precision, text_precision = self._modes(precision, text_precision)
        call = dict(prompt=prompt, negative_prompt=negative_prompt, frames=_as_int(frames),
                    resolution=_as_int(resolution), steps=_as_int(steps), text_guidance=text_guidance,
                    motion_guidance=motion_guidance, seed=_as_int(seed), sampler=sampler)
        fps = _check_fps(fps)

        def save(out, folder: Path) -> Result:
            from .export import save_result

            settings = {**out.settings[0], "model": self.model_name, "fps": fps, "precision": precision,
                        "text_precision": text_precision, "seconds": round(out.seconds, 3)}
            if call["frames"] == 1:
                settings.pop("fps")
            upscale = display_upscale(settings["height"])
            name = f"gentron-{settings['seed']}"
            path = save_result(out.frames[0], folder / f"{name}.{'png' if call['frames'] == 1 else 'mp4'}",
                               fps=fps, settings=settings, upscale=upscale)
            settings_path = _write_json(folder / f"{name}.json", settings)
            return Result(path, settings, settings_path, [path, settings_path], seconds=out.seconds)

        return self._run(call, precision, text_precision, key, save)

    def compare(self, prompt: str, motion_guidances: str | list[float] = DEFAULT_MOTION_STRENGTHS,
                negative_prompt: str = "", frames: int = 8, resolution: int | None = None, steps: int = 25,
                text_guidance: float = 7.5, seed: int | None = 0, sampler: str | None = None, fps: float = 4.0,
                precision: str | None = None, text_precision: str | None = None,
                key: str = "default") -> Iterator[Update]:
        """One prompt, one seed, several λM in one batched call: a tiled, labelled MP4 plus one MP4 each."""
        precision, text_precision = self._modes(precision, text_precision)
        strengths = parse_motion_strengths(motion_guidances)
        call = dict(prompt=prompt, negative_prompt=negative_prompt, frames=_as_int(frames),
                    resolution=_as_int(resolution), steps=_as_int(steps), text_guidance=text_guidance,
                    motion_guidance=strengths, seed=_as_int(seed), sampler=sampler)
        fps = _check_fps(fps)
        if call["frames"] == 1:
            raise ValueError("frames must be at least 2: motion guidance only changes videos")

        def save(out, folder: Path) -> Result:
            from .export import save_mp4

            settings = {**out.settings[0], "model": self.model_name, "motion_guidance": strengths, "fps": fps,
                        "precision": precision, "text_precision": text_precision, "seconds": round(out.seconds, 3)}
            upscale = display_upscale(settings["height"])
            labels = [motion_label(v) for v in strengths]
            name = f"compare-{settings['seed']}"
            tiled = save_mp4(labelled_tiles(out.frames, labels, upscale), folder / f"{name}.mp4", fps, settings)
            parts = [(save_mp4(clip, folder / f"{name}-lm{v:g}.mp4", fps, {**settings, **s, "model": self.model_name},
                               upscale), label)
                     for clip, s, v, label in zip(out.frames, out.settings, strengths, labels)]
            settings_path = _write_json(folder / f"{name}.json", settings)
            return Result(tiled, settings, settings_path, [tiled, *(p for p, _ in parts), settings_path], parts,
                          out.seconds)

        return self._run(call, precision, text_precision, key, save)

    def stop(self, key: str = "default") -> bool:
        """Ask the run started under ``key`` to stop before its next step; False if none is running."""
        event = self._stops.get(key)
        if event is None:
            return False
        event.set()
        return True

    @property
    def busy(self) -> bool:
        return self._run_lock.locked()

    def _run(self, call: dict, precision: str, text_precision: str, key: str,
             save: Callable[[Any, Path], Result]) -> Iterator[Update]:
        """Check the input now (errors come before any work), then stream the run (a generator)."""
        pipe = self.pipeline(precision, text_precision)
        size = call.pop("resolution") or pipe.default_resolution
        call["sampler"] = call["sampler"] or pipe.default_sampler
        lm = call["motion_guidance"] if isinstance(call["motion_guidance"], list) else [call["motion_guidance"]]
        pipe.check_inputs(call["prompt"], call["negative_prompt"], call["frames"], size, size, call["steps"],
                          call["text_guidance"], lm, call["seed"], call["sampler"])
        call.update(height=size, width=size, num_inference_steps=call.pop("steps"))
        return self._stream(pipe, call, key, save)

    def _stream(self, pipe, call: dict, key: str, save: Callable[[Any, Path], Result]) -> Iterator[Update]:
        stop = threading.Event()
        self._stops[key] = stop
        updates: queue.Queue = queue.Queue()
        progress = [0, call["num_inference_steps"]]

        def on_step(step: int, total: int, preview: np.ndarray | None) -> None:
            progress[:] = step, total
            updates.put(("step", Update(step, total, preview, None)))

        def work() -> None:  # the lock is taken here, so an abandoned stream can never hold it
            try:
                with self._run_lock:
                    out = pipe(**call, callback=on_step, preview_every=_preview_every(call["num_inference_steps"]),
                               should_stop=stop.is_set)
                updates.put(("done", out))
            except BaseException as e:  # handed to the stream, which raises it
                updates.put(("error", e))

        worker = threading.Thread(target=work, name=f"gentron-run-{key}", daemon=True)
        outcome = "error"
        try:
            worker.start()
            while True:
                kind, value = updates.get()
                if kind == "step":
                    yield value
                elif kind == "error":
                    from .pipeline import Interrupted

                    outcome = "stopped" if isinstance(value, Interrupted) else "error"
                    raise value
                else:
                    break
            self.cleanup(keep=self.max_runs - 1)
            result = save(value, self._new_run_folder())
            outcome = "done"
            yield Update(progress[1], progress[1], None, result)
        except GeneratorExit:  # the consumer went away (a cancelled request)
            outcome = "stopped" if outcome != "done" else outcome
            raise
        finally:  # also on close(): a cancelled request stops its run within one step
            stop.set()
            worker.join()
            if self._stops.get(key) is stop:
                del self._stops[key]
            self.last_outcome = (outcome, *progress)

    # ---- files ----------------------------------------------------------------------------------
    def _new_run_folder(self) -> Path:
        folder = self.outputs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def runs(self) -> list[Path]:
        """Result folders, oldest first."""
        return sorted((p for p in self.outputs_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)

    def cleanup(self, keep: int | None = None) -> int:
        """Remove result folders older than max_age_s and all but the newest ``keep``; returns how many."""
        keep = self.max_runs if keep is None else max(0, keep)
        runs, now, removed = self.runs(), time.time(), 0
        for i, folder in enumerate(runs):
            if len(runs) - i > keep or now - folder.stat().st_mtime > self.max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


def _check_fps(fps: Any) -> float:
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0.5 <= fps <= 60:
        raise ValueError(f"fps must be a number from 0.5 to 60, got {fps!r}")
    return float(fps)


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return path
