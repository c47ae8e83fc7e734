"""Writers for results: PNG for images, MP4 (H.264, yuv420p) and GIF for videos.

Every file carries the settings that made it (PNG text chunk, MP4 comment, GIF comment), so any
result can be made again: ``read_settings(path)`` gives them back.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

SETTINGS_KEY = "gentron"


def _prepare(frames: np.ndarray, upscale: int) -> np.ndarray:
    """(F, H, W, 3) uint8, nearest-upscaled, padded to even sides (H.264 yuv420p needs them)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    if upscale > 1:
        frames = frames.repeat(upscale, axis=1).repeat(upscale, axis=2)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    return Path(tmp)


def save_png(frame: np.ndarray, path: str | Path, settings: dict[str, Any] | None = None, upscale: int = 1) -> Path:
    """One frame (H, W, 3) uint8 -> PNG with the settings in a text chunk."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    info.add_text(SETTINGS_KEY, json.dumps(settings or {}))
    tmp = _atomic_target(path)
    Image.fromarray(_prepare(frame, upscale)[0]).save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)
    return path


def save_mp4(frames: np.ndarray, path: str | Path, fps: float = 4, settings: dict[str, Any] | None = None,
             upscale: int = 1) -> Path:
    """(F, H, W, 3) uint8 -> H.264 yuv420p MP4 (plays in browsers), settings in the comment tag."""
    from moviepy import ImageSequenceClip  # imported here: moviepy is slow to import

    path = Path(path)
    frames = _prepare(frames, upscale)
    tmp = _atomic_target(path)
    clip = ImageSequenceClip(list(frames), fps=fps)
    clip.write_videofile(str(tmp), codec="libx264", audio=False, logger=None, preset="medium",
                         ffmpeg_params=["-pix_fmt", "yuv420p", "-crf", "12", "-movflags", "+faststart",
                                        "-metadata", f"comment={json.dumps(settings or {})}"])
    clip.close()
    if tmp.stat().st_size == 0:
        raise RuntimeError(f"ffmpeg wrote an empty file for {path}")
    os.replace(tmp, path)
    return path


def save_gif(frames: np.ndarray, path: str | Path, fps: float = 4, settings: dict[str, Any] | None = None,
             upscale: int = 1) -> Path:
    """(F, H, W, 3) uint8 -> looping GIF with the settings as its comment."""
    path = Path(path)
    images = [Image.fromarray(f) for f in _prepare(frames, upscale)]
    tmp = _atomic_target(path)
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                   comment=json.dumps(settings or {}).encode())
    os.replace(tmp, path)
    return path


def save_result(frames: np.ndarray, path: str | Path, fps: float = 4, settings: dict[str, Any] | None = None,
                upscale: int = 1) -> Path:
    """Write by extension: .png (one frame), .mp4 or .gif."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        if len(frames) != 1:
            raise ValueError(f"a PNG holds one frame, got {len(frames)}: write .mp4 or .gif for videos")
        return save_png(frames[0], path, settings, upscale)
    if suffix == ".mp4":
        return save_mp4(frames, path, fps, settings, upscale)
    if suffix == ".gif":
        return save_gif(frames, path, fps, settings, upscale)
    raise ValueError(f"unknown output type {suffix!r} for {path}: use .png, .mp4 or .gif")


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings embedded by the writers above."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return json.loads(Image.open(path).text[SETTINGS_KEY])
    if suffix == ".gif":
        return json.loads(Image.open(path).info["comment"])
    if suffix == ".mp4":
        import imageio_ffmpeg

        # ffmetadata output escapes '=', ';', '#', '\\' and newlines with a backslash
        meta = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "ffmetadata",
                               "-"], capture_output=True, text=True).stdout
        match = re.search(r"^comment=((?:[^\\\n]|\\.)*)$", meta, re.MULTILINE | re.DOTALL)
        if not match:
            raise ValueError(f"{path} has no embedded settings")
        return json.loads(re.sub(r"\\(.)", r"\1", match.group(1), flags=re.DOTALL))
    raise ValueError(f"unknown file type {suffix!r}")


def read_video(path: str | Path) -> np.ndarray:
    """MP4/GIF -> (F, H, W, 3) uint8, for checks and evaluation."""
    import imageio.v3 as iio

    return np.stack([np.asarray(f)[..., :3] for f in iio.imiter(path)])
