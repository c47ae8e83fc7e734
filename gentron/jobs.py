"""Running a list of generation jobs with one loaded pipeline: what the CLI's generate and the evaluation suites share.

A job is a dict with ``prompt``, ``out`` (the file to write) and ``frames``, and may override the per-sample
settings (``PER_JOB``); everything else comes from one ``GenerationSettings``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

PER_JOB = ("negative_prompt", "resolution", "text_guidance", "motion_guidance", "seed")


@dataclass(frozen=True)
class GenerationSettings:
    steps: int | None = None  # sampling steps; None: the model's own
    negative_prompt: str = ""  # replaces the empty text in guidance
    resolution: int | None = None  # side in pixels; None: the model's native size
    text_guidance: float | None = None  # λT; None: the model's own
    motion_guidance: float = 1.0  # λM, videos only
    seed: int = 0  # a job without its own seed takes this one
    scheduler: str | None = None  # the sampler; None: the one the model's folder ships
    guidance_interval: tuple[float, float] | None = None  # guided timesteps; None: the model's own
    eta: float = 0.0  # DDIM's η, ddim only
    fps: float = 4.0  # of written videos
    quantize: str = "none"  # the transformer's mode (gentron.quantization), recorded with each result
    quantize_text: str | None = None  # the text towers' mode; None: the same as quantize
    model: str | None = None  # what was asked for (folder, hub id, random:PRESET; None: the built-in model)

    def resolved(self, pipe) -> "GenerationSettings":
        """These settings with the model's own steps, sampler, λT and guidance interval where none was named, so
        what a run records names what it used."""
        return replace(self, steps=pipe.default_steps if self.steps is None else self.steps,
                       scheduler=self.scheduler or pipe.default_sampler,
                       text_guidance=pipe.default_text_guidance if self.text_guidance is None else self.text_guidance,
                       guidance_interval=self.guidance_interval or tuple(pipe.default_guidance_interval))


def run_jobs(pipe, jobs: list[dict], settings: GenerationSettings) -> Iterator[dict]:
    """Generate and save each job with one loaded pipeline; yields one result dict per job: its settings, path and
    sampling seconds. ``settings`` left at the model's own sampler or interval are resolved against ``pipe``."""
    from .export import save_result

    s = settings.resolved(pipe)
    for job in jobs:
        per_job = {k: job.get(k, getattr(s, k)) for k in PER_JOB}
        out = pipe(job["prompt"], negative_prompt=per_job["negative_prompt"], frames=job["frames"],
                   height=per_job["resolution"], num_inference_steps=s.steps, text_guidance=per_job["text_guidance"],
                   motion_guidance=per_job["motion_guidance"], seed=per_job["seed"], sampler=s.scheduler,
                   guidance_interval=s.guidance_interval, eta=s.eta)
        result = {**out.settings[0], "quantize": s.quantize, "quantize_text": s.quantize_text or s.quantize,
                  "fps": s.fps}
        path = save_result(out.frames[0], job["out"], fps=s.fps, settings=result)
        yield {**result, "id": job.get("id"), "path": str(path), "seconds": round(out.seconds, 4)}
