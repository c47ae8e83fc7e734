"""The README's pictures: a grid of images, strips of video frames and one prompt at several motion strengths
(one batched call, one noise), each labelled with its prompt and seed.

    python -m gentron.evaluation.gallery --out assets/examples [--model PATH]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_PROMPTS = ["a red circle", "a big blue square", "a small yellow triangle", "a green star",
                 "a purple circle to the left of an orange square", "a white star above a cyan triangle",
                 "two red squares", "three yellow circles"]
VIDEO_PROMPTS = ["a green circle growing", "a purple square shrinking", "a red circle moving right",
                 "a blue square moving left", "a green triangle moving up quickly and a white circle standing still"]
MOTION_PROMPT, MOTION_STRENGTHS = "a yellow star moving right", (0.0, 1.0, 2.0)


def _label(tile: np.ndarray, text: str, width: int) -> Image.Image:
    """A tile with its caption underneath, wrapped to the tile's width."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width // 6:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    canvas = Image.new("RGB", (tile.shape[1], tile.shape[0] + 12 * len(lines) + 4), (255, 255, 255))
    canvas.paste(Image.fromarray(tile), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, text_line in enumerate(lines):
        draw.text((2, tile.shape[0] + 2 + 12 * i), text_line, fill=(0, 0, 0))
    return canvas


def _row(images: list[Image.Image], gap: int = 4) -> Image.Image:
    h = max(im.height for im in images)
    out = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), h), (255, 255, 255))
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def _strip(frames: np.ndarray, scale: int) -> np.ndarray:
    """(F, H, W, 3) -> the frames side by side, scaled, 2 px apart."""
    return np.concatenate([np.pad(f.repeat(scale, 0).repeat(scale, 1), ((0, 0), (0, 2), (0, 0)), constant_values=255)
                           for f in frames], axis=1)


def _sheet(rows: list[Image.Image], gap: int = 6) -> Image.Image:
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height + gap for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + gap
    return sheet


def make_gallery(pipe, out: Path, seed: int = 0, steps: int | None = None, scale: int = 2) -> dict:
    """Render the prompts above at the model's own settings (``steps`` None: its own count); writes images.png,
    video_strips.png, motion_strips.png, one MP4 per video and index.json."""
    from ..export import save_mp4

    out.mkdir(parents=True, exist_ok=True)
    index = {"images": [], "videos": []}
    tiles = []
    for i, prompt in enumerate(IMAGE_PROMPTS):
        frame = pipe(prompt, seed=seed + i, num_inference_steps=steps).frames[0, 0]
        tiles.append(_label(frame.repeat(scale, 0).repeat(scale, 1), f"{prompt} (seed {seed + i})", 64 * scale))
        index["images"].append({"prompt": prompt, "seed": seed + i})
    half = len(tiles) // 2
    top, bottom = _row(tiles[:half]), _row(tiles[half:])
    grid = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 4), (255, 255, 255))
    grid.paste(top, (0, 0))
    grid.paste(bottom, (0, top.height + 4))
    grid.save(out / "images.png")
    strips = []
    for i, prompt in enumerate(VIDEO_PROMPTS):
        result = pipe(prompt, frames=8, seed=seed + i, num_inference_steps=steps)
        save_mp4(result.frames[0], out / f"video_{i}.mp4", settings=result.settings[0], upscale=4)
        strip = _strip(result.frames[0], scale)
        strips.append(_label(strip, f"{prompt} (seed {seed + i}, frames left to right)", strip.shape[1]))
        index["videos"].append({"prompt": prompt, "seed": seed + i, "file": f"video_{i}.mp4"})
    _sheet(strips).save(out / "video_strips.png")
    result = pipe(MOTION_PROMPT, frames=8, seed=seed, num_inference_steps=steps,
                  motion_guidance=list(MOTION_STRENGTHS))
    strips = [_strip(frames, scale) for frames in result.frames]
    strips = [_label(strip, f"{MOTION_PROMPT}, motion guidance {m:g} (seed {seed})", strip.shape[1])
              for strip, m in zip(strips, MOTION_STRENGTHS)]
    _sheet(strips).save(out / "motion_strips.png")
    index["motion"] = {"prompt": MOTION_PROMPT, "seed": seed, "motion_guidance": list(MOTION_STRENGTHS)}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def main(argv: list[str] | None = None) -> int:
    from ..loading import load_pipeline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("assets/examples"))
    p.add_argument("--model", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(make_gallery(load_pipeline(args.model), args.out, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
