"""The engine side of the web app (app.py): one loaded pipeline, one generation at a time, streamed.

``Studio`` owns the pipeline (loaded once, lazily, under a lock), runs a generation on a worker
thread and hands back a stream of ``Update(step, total, preview, result)``: ``preview`` is the
decoded clean estimate on preview steps, ``result`` is set on the last update only. ``stop(key)``
halts a run within one step. Results go into a temp folder of its own, one sub-folder per run
(PNG for images, MP4 for videos, upscaled for display, the settings JSON beside them); old runs
are removed as new ones arrive (bounded count and age).

Every request is checked at the edge by ``check_request`` (types and ranges, each field named by its
control's label and its API name) before anything runs; a refused one raises ``InputError``. The
precision is the launch's: a request may name it but not change it, unless the studio was started
for one person (``switch_precision=True``), since a reload changes every user's results and costs.

No gradio here, and nothing heavy at import: torch and the engine load on first use, so
``import app`` stays fast.
"""
from __future__ import annotations

import atexit
import json
import logging
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
    default_text_guidance: float  # the λT the model's folder names (a flow model wants less than the paper's 7.5)
    default_steps: int  # the sampling steps the model's folder names


log = logging.getLogger("gentron.studio")

# The controls' labels, keyed by the API parameter they feed: app.py labels its widgets with these, and a
# refused value is reported under both names, so a person and a script both see what to fix.
LABELS = {
    "mode": "Mode",
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "frames": "Frames",
    "fps": "Frames per second",
    "resolution": "Resolution (pixels a side)",
    "steps": "Steps",
    "text_guidance": "Text guidance λT",
    "motion_guidance": "Motion guidance λM",
    "motion_guidances": "Motion strengths λM (comma-separated)",
    "seed": "Seed",
    "sampler": "Sampler",
    "precision": "Precision / quantization",
    "text_precision": "Text encoders' precision",
}


class InputError(ValueError):
    """A request refused at the edge, before any work: the message names the field and what was sent."""


@dataclass(frozen=True)
class Field:
    """What one request value may be. kind: "int", "number", "text" or "choice"."""
    kind: str
    low: float | None = None  # inclusive range for "int" and "number"
    high: float | None = None
    multiple: int = 1  # "int": the value must be a multiple of this (resolution)
    choices: tuple = ()  # "choice"
    optional: bool = False  # None is allowed (seed: a random one; resolution: the model's default)
    why: str = ""  # said after a refused choice (e.g. how precision is chosen on this server)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_request(values: dict[str, Any], fields: dict[str, Field]) -> dict[str, Any]:
    """The one gate every request passes: each value of ``values`` checked against its ``Field`` for type and
    range (booleans are not numbers, 2.5 is not an integer, NaN is not in any range, strings are not numbers);
    unknown names are refused too. Returns the values with integer-valued floats made ints (web forms send
    25.0). Raises InputError naming the control's label and the parameter."""
    out = {}
    for name, value in values.items():
        field = fields.get(name)
        label = f"{LABELS.get(name, name)} ({name})"
        if field is None:
            raise InputError(f"{name} is not a setting of this request")
        if value is None:
            if field.optional:
                out[name] = None
                continue
            raise InputError(f"{label} is missing (got None)")
        if field.kind in ("int", "number"):
            real = isinstance(value, (int, float)) and not isinstance(value, bool)
            if real and field.kind == "int" and isinstance(value, float) and value.is_integer():
                value = int(value)
            what = "an integer" if field.kind == "int" else "a number"
            ok = real and math.isfinite(value) and (field.kind == "number" or isinstance(value, int))
            span = f"{what} from {_num(field.low)} to {_num(field.high)}"
            if field.multiple > 1:
                span += f", a multiple of {field.multiple}"
            if not ok or not field.low <= value <= field.high or (field.kind == "int" and value % field.multiple):
                raise InputError(f"{label} must be {span}; got {_shown(value)}")
        elif field.kind == "text":
            if not isinstance(value, str):
                raise InputError(f"{label} must be text; got {_shown(value)} ({type(value).__name__})")
        elif field.kind == "choice":
            if not isinstance(value, str) or value not in field.choices:
                raise InputError(f"{label} must be one of {', '.join(map(str, field.choices))}; got "
                                 f"{_shown(value)}{field.why}")
        out[name] = value
    return out


def precision_modes(device: str = "cpu") -> list[str]:
    """What gentron.quantization offers on ``device``, "none" (fp32) first."""
    from .quantization import available_modes

    return list(dict.fromkeys(["none", *available_modes(device)]))


def parse_motion_strengths(text: str | list[float]) -> list[float]:
    """"0, 0.5, 1" -> [0.0, 0.5, 1.0]; the engine checks the range."""
    example = f"numbers separated by commas, e.g. {DEFAULT_MOTION_STRENGTHS!r}"
    if isinstance(text, str):
        items = [s for s in text.replace(";", ",").replace(" ", ",").split(",") if s]
        try:
            values = [float(s) for s in items]
        except ValueError:
            raise InputError(f"motion strengths must be {example}; got {_shown(text)}") from None
    elif isinstance(text, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in text):
        values = [float(v) for v in text]
    else:
        raise InputError(f"motion strengths must be {example}, or a list of numbers; got {_shown(text)}")
    if not 1 <= len(values) <= MAX_COMPARE:
        raise InputError(f"give 1 to {MAX_COMPARE} motion strengths to compare, got {len(values)}")
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


def _preview_every(steps: Any) -> int:
    """A preview every few steps: about five per run, at least every fifth step."""
    return max(1, min(5, steps // 5)) if isinstance(steps, int) else 5


class Studio:
    """The app's engine: a lazily loaded pipeline and streamed, stoppable generations.

    model: a folder, a hub id, ``random:PRESET`` or None ($GENTRON_MODEL, else the built-in one).
    precision, text_precision: the transformer's and the text towers' modes, fixed at launch (None: the device's
    default; the towers follow the transformer). switch_precision: let a request reload at another mode (one
    person's studio only: a reload changes every other user's results and costs a load).
    """

    def __init__(self, model: str | None = None, device: str | None = None, outputs_dir: str | Path | None = None,
                 max_runs: int = 32, max_age_s: float = 3600.0, compile: bool = False, precision: str | None = None,
                 text_precision: str | None = None, switch_precision: bool = False):
        self.model = model
        self.compile = compile  # torch.compile the transformer (gentron.compilation): 30-50 s per new shape on 2 cores
        self.device = device
        self._owns_outputs = outputs_dir is None  # a folder of its own goes at exit (close)
        if outputs_dir is None:
            outputs_dir = tempfile.mkdtemp(prefix="gentron-studio-")
            atexit.register(self.close)
        self.outputs_dir = Path(outputs_dir)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.max_runs, self.max_age_s = max_runs, max_age_s
        self._pipe = None
        self._pipe_modes: tuple[str, str] | None = None  # (transformer, text towers) of the loaded pipeline
        self._launch_modes = (precision, text_precision)
        self.switch_precision = switch_precision
        self.loads = 0  # pipelines loaded so far: a request that reloads shows here
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
        from .loading import load_pipeline, resolve_model

        self.model_name = resolve_model(self.model)
        self.loads += 1
        return load_pipeline(self.model, self.resolved_device, precision, compile=self.compile,
                             quantize_text=text_precision)

    @property
    def precision(self) -> str:
        """The transformer's precision in the loaded pipeline; before any, the launch's, else the device's
        default (gentron.quantization)."""
        if self._pipe_modes:
            return self._pipe_modes[0]
        if self._launch_modes[0]:
            return self._launch_modes[0]
        from .quantization import default_mode

        mode = default_mode(self.resolved_device)
        return mode if mode in self.precisions() else "none"

    @property
    def text_precision(self) -> str:
        """The text towers' precision in the loaded pipeline; before any, the launch's, else ``precision``."""
        return self._pipe_modes[1] if self._pipe_modes else self._launch_modes[1] or self.precision

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
                         samplers=tuple(pipe.samplers), default_text_guidance=pipe.default_text_guidance,
                         default_steps=pipe.default_steps)

    def fields(self) -> dict[str, Field]:
        """What a request may hold: the loaded model's sizes, frames and samplers; the launch's precision (any
        offered one where switching is allowed)."""
        from .pipeline import MAX_FRAMES, MAX_GUIDANCE, MAX_STEPS

        pipe = self.pipeline()
        m, temporal = pipe.size_multiple, bool(pipe.transformer.config.temporal)
        fixed = not self.switch_precision
        why = " (the precision is fixed when the server starts: app.py --precision / --text-precision; " \
              "--local lets one person switch)" if fixed else ""
        guidance = Field("number", 0, MAX_GUIDANCE)
        return dict(
            mode=Field("choice", choices=("image", "video") if temporal else ("image",)),
            prompt=Field("text"), negative_prompt=Field("text"),
            frames=Field("int", 1, MAX_FRAMES if temporal else 1),
            fps=Field("number", 0.5, 60),
            resolution=Field("int", m, 2048, multiple=m, optional=True),
            steps=Field("int", 1, MAX_STEPS),
            text_guidance=guidance, motion_guidance=guidance,
            seed=Field("int", 0, MAX_SEED, optional=True),
            sampler=Field("choice", choices=tuple(pipe.samplers), optional=True),
            precision=Field("choice", choices=(self.precision,) if fixed else tuple(self.precisions()), why=why),
            text_precision=Field("choice", choices=(self.text_precision,) if fixed else tuple(self.precisions()),
                                 optional=True, why=why),
        )

    def _checked(self, values: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        """``values`` through check_request, and the (transformer, towers) modes the run takes."""
        precision, text_precision = values.pop("precision", None), values.pop("text_precision", None)
        modes = {"precision": precision} if precision is not None else {}
        if text_precision is not None:
            modes["text_precision"] = text_precision
        values = check_request({**values, **modes}, self.fields())
        for name in modes:
            values.pop(name)
        if not self.switch_precision:
            return values, self.precision, self.text_precision
        return values, *self._modes(precision, text_precision)

    # ---- generation -----------------------------------------------------------------------------
    def generate(self, prompt: str, negative_prompt: str = "", frames: int = 8, resolution: int | None = None,
                 steps: int | None = None, text_guidance: float | None = None, motion_guidance: float = 1.0,
                 seed: int | None = 0, sampler: str | None = None, fps: float = 4.0, precision: str | None = None,
                 text_precision: str | None = None, key: str = "default") -> Iterator[Update]:
        """One image (frames=1, a PNG) or video (an MP4), streamed as updates.

        Raises InputError (a ValueError) for a value refused at the edge, ValueError (the engine's message) for
        one the engine refuses, and ``Interrupted`` after ``stop(key)``. ``precision`` (the transformer's) and
        ``text_precision`` (the text towers'; None follows ``precision``): None keeps the loaded model; another
        mode reloads it only where the studio allows switching, and is refused elsewhere.
        """
        text_guidance, steps = self._own("text_guidance", text_guidance), self._own("steps", steps)
        call, precision, text_precision = self._checked(dict(
            prompt=prompt, negative_prompt=negative_prompt, frames=frames, resolution=resolution, steps=steps,
            text_guidance=text_guidance, motion_guidance=motion_guidance, seed=seed, sampler=sampler, fps=fps,
            precision=precision, text_precision=text_precision))
        fps = float(call.pop("fps"))

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
                negative_prompt: str = "", frames: int = 8, resolution: int | None = None, steps: int | None = None,
                text_guidance: float | None = None, seed: int | None = 0, sampler: str | None = None, fps: float = 4.0,
                precision: str | None = None, text_precision: str | None = None,
                key: str = "default") -> Iterator[Update]:
        """One prompt, one seed, several λM in one batched call: a tiled, labelled MP4 plus one MP4 each."""
        text_guidance, steps = self._own("text_guidance", text_guidance), self._own("steps", steps)
        call, precision, text_precision = self._checked(dict(
            prompt=prompt, negative_prompt=negative_prompt, frames=frames, resolution=resolution, steps=steps,
            text_guidance=text_guidance, seed=seed, sampler=sampler, fps=fps, precision=precision,
            text_precision=text_precision))
        try:
            strengths = parse_motion_strengths(motion_guidances)
            fields = self.fields()
            for v in strengths:
                check_request({"motion_guidance": v}, fields)
        except InputError as e:
            raise InputError(f"{LABELS['motion_guidances']} (motion_guidances): {e}") from None
        call["motion_guidance"] = strengths
        fps = float(call.pop("fps"))
        if call["frames"] == 1:
            raise InputError(f"{LABELS['frames']} (frames) must be at least 2: motion guidance only changes videos")

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

    def _own(self, name: str, value):
        """None: the loaded model's own ``default_<name>`` (its λT, its step count); anything else goes on to the
        edge check."""
        return getattr(self.pipeline(), f"default_{name}") if value is None else value

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
    def close(self) -> None:
        """Remove the outputs folder if the studio made it (a folder it was given is left as it is)."""
        if self._owns_outputs:
            shutil.rmtree(self.outputs_dir, ignore_errors=True)

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


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return path
