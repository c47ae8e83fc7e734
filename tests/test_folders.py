"""Data of one's own: a folder of captioned images, MP4s, a GIF and a clip folder, with broken files
among them; training on it, and on its latent + text-embedding cache.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gentron.data.folders import CACHE_INDEX, LatentCache, MediaFolder, encoder_fingerprint, main
from gentron.export import save_gif, save_mp4
from gentron.factory import build_random_pipeline
from gentron.training import TrainConfig, train
from gentron.training.data import ImageFolder, IndexedSource, make_source, prepare_batch
from gentron.training.encode import FrozenEncoders

RES, FRAMES = 32, 4  # the tiny VAE (factor 2) and patch 2: 16x16 latents
LEVELS = [0, 30, 60, 90, 120, 150, 180, 210]  # walk.mp4's frames are flat greys of these levels


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def greys(levels: list[int], h: int = 24, w: int = 40) -> np.ndarray:
    return np.stack([np.full((h, w, 3), v, np.uint8) for v in levels])


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for i in range(3):  # NAME.png + NAME.txt
        Image.fromarray(noise(20, 28, i)).save(root / f"img{i}.png")
        (root / f"img{i}.txt").write_text(["a red circle\n", "two blue squares", "three green stars"][i])
    Image.fromarray(noise(40, 30, 3)).save(root / "photo.jpg", quality=90)  # captioned in metadata.jsonl
    save_mp4(greys(LEVELS), root / "walk.mp4")
    (root / "walk.txt").write_text("a blue square moving up")
    save_mp4(greys(LEVELS[:6]), root / "run.mp4")
    save_gif(greys(LEVELS[:4], 16, 16), root / "spin.gif")
    (root / "clip").mkdir()  # a folder of frames + caption.txt
    for i in range(5):
        Image.fromarray(noise(16, 16, 10 + i)).save(root / "clip" / f"{i:03d}.png")
    (root / "clip" / "caption.txt").write_text("a green star spinning")
    # broken things, each skipped for its own reason
    (root / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(300))
    (root / "corrupt.txt").write_text("a corrupt file")
    Image.fromarray(noise(16, 16, 20)).save(root / "nocap.png")
    save_mp4(greys(LEVELS[:2]), root / "short.mp4")
    (root / "short.txt").write_text("too short for four frames")
    Image.fromarray(noise(16, 16, 21)).save(root / "blank.png")
    (root / "blank.txt").write_text("  \n")
    Image.fromarray(noise(16, 16, 22)).save(root / "long.png")  # 40 words: more than the tiny towers read
    (root / "long.txt").write_text(" ".join(["red"] * 40))
    (root / "notes.md").write_text("not data")
    lines = [{"file_name": "photo.jpg", "text": "two yellow triangles"},
             {"file_name": "run.mp4", "caption": "a white circle moving right quickly"},
             {"file_name": "spin.gif", "prompt": "a purple star growing"},
             {"file_name": "missing.png", "text": "no such file"}]
    (root / "metadata.jsonl").write_text("\n".join([json.dumps(x) for x in lines] + ["{not json", ""]))
    return root


def test_folder_scan_samples_and_skips(media):
    folder = MediaFolder(media, RES, FRAMES)
    assert [(i.path.name, i.kind) for i in folder.items] == [
        ("clip", "clip"), ("img0.png", "image"), ("img1.png", "image"), ("img2.png", "image"), ("long.png", "image"),
        ("photo.jpg", "image"), ("run.mp4", "video"), ("spin.gif", "video"), ("walk.mp4", "video")]
    assert folder.skipped == {"empty caption": ["blank.png"], "unreadable": ["corrupt.png"],
                              "bad metadata line": ["metadata.jsonl:5"], "no caption": ["nocap.png"],
                              "too short": ["short.mp4"], "metadata names no media file": ["missing.png"]}
    assert "9 samples (5 images, 3 videos, 1 clip); skipped 6" in folder.summary()
    samples = [folder[i] for i in range(len(folder))]
    assert [s["caption"] for s in samples[:2]] == ["a green star spinning", "a red circle"]
    assert [s["caption"] for s in samples[5:8]] == ["two yellow triangles", "a white circle moving right quickly",
                                                    "a purple star growing"]
    for s, item in zip(samples, folder.items):
        assert s["pixels"].shape == ((1 if item.kind == "image" else FRAMES), 3, RES, RES)
        assert s["pixels"].dtype == torch.float32 and s["pixels"].abs().max() <= 1.0
    walk = samples[-1]["pixels"].mean(dim=(1, 2, 3))  # the first four frames, in order, at the native rate
    torch.testing.assert_close(walk, torch.tensor(LEVELS[:4]) / 127.5 - 1, atol=0.05, rtol=0)

    again = MediaFolder(media, RES, FRAMES)  # deterministic: same items, same pixels
    assert again.items == folder.items
    assert all(torch.equal(again[i]["pixels"], s["pixels"]) for i, s in enumerate(samples))
    assert ImageFolder is MediaFolder
    source = make_source(str(media), seed=0, resolution=RES, frames=FRAMES)
    assert isinstance(source, IndexedSource) and len(source.batch(0, 0, 1, 9)) == 9
    folder.check_pipeline(build_random_pipeline("tiny", temporal=False))  # the trainer's check, before step 0
    assert len(folder) == 8 and folder.skipped["caption too long"] == ["long.png"]

    strided = MediaFolder(media, RES, FRAMES, frame_stride=2)  # frames 0, 2, 4, 6: a video needs 7
    assert sorted(strided.skipped["too short"]) == ["clip", "run.mp4", "short.mp4", "spin.gif"]  # 5, 6, 2, 4 frames
    walk = strided[len(strided) - 1]["pixels"].mean(dim=(1, 2, 3))
    torch.testing.assert_close(walk, torch.tensor(LEVELS[::2]) / 127.5 - 1, atol=0.05, rtol=0)


def test_file_broken_after_the_scan_is_skipped_not_fatal(tmp_path):
    for name in "abc":
        Image.fromarray(noise(16, 16, ord(name))).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_text(f"caption {name}")
    folder = MediaFolder(tmp_path, 16)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))  # broken mid-run
    (tmp_path / "c.png").write_bytes(b"")
    assert folder[1]["caption"] == "caption a"  # b, then c, fail: the next readable one, wrapping round
    assert folder[2]["caption"] == "caption a" and folder[1]["caption"] == "caption a"
    assert folder.skipped == {"unreadable at read time": ["b.png", "c.png"]}  # each counted once
    assert [s["caption"] for s in IndexedSource(folder, seed=0).batch(0, 0, 1, 3)] == ["caption a"] * 3
    assert MediaFolder(tmp_path, 16).skip_counts == {"unreadable": 2}  # a new scan finds them
    with pytest.raises(ValueError, match="no training samples"):
        (tmp_path / "a.png").write_bytes(b"junk")
        MediaFolder(tmp_path, 16)


def run_config(data: Path, out: Path, steps: int) -> TrainConfig:
    return TrainConfig(init_from="random:tiny", to_video=True, data=str(data), output_dir=str(out), resolution=RES,
                       frames=FRAMES, batch_size=2, steps=steps, checkpoint_every=0, log_every=1, p_motion_free=0.5,
                       ema_decay=0.9, lr=1e-3)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def folder_run(media, tmp_path_factory) -> Path:
    """Two steps of T2V training (grown from random:tiny) on the folder: MP4s, a GIF, a clip and stills."""
    out = tmp_path_factory.mktemp("folder-run") / "run"
    train(run_config(media, out, steps=2))
    return out


def test_folder_of_videos_trains(folder_run):
    assert (folder_run / "final" / "model_index.json").is_file()
    assert len(losses(folder_run)) == 2 and all(math.isfinite(x) for x in losses(folder_run))


def test_cache_round_trip_and_training(media, folder_run, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    args = ["cache", "--data", str(media), "--model", "random:tiny", "--resolution", str(RES), "--frames",
            str(FRAMES), "--out", str(out), "--shard-size", "3"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [CACHE_INDEX] + [f"shard_0000{i}.safetensors" for i in range(3)]
    with pytest.raises(SystemExit):  # an existing cache is not overwritten by accident
        main(args)
    cache = LatentCache(out, RES, FRAMES)
    pipe = build_random_pipeline("tiny", temporal=False, seed=0)  # what init_from: random:tiny builds
    folder = MediaFolder(media, RES, FRAMES)
    folder.check_pipeline(pipe)
    assert len(cache) == len(folder) == 8 and cache.index["skipped"] == folder.skipped
    encoders = FrozenEncoders(pipe, torch.device("cpu"))
    for i in range(len(folder)):
        fresh, cached = folder[i], cache[i]
        assert cached["caption"] == fresh["caption"]
        posterior = pipe.vae.encode(fresh["pixels"]).latent_dist
        torch.testing.assert_close(cached["latent_mean"], posterior.mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cached["latent_logvar"], posterior.logvar, atol=1e-5, rtol=1e-4)
        assert torch.equal(cached["text"], encoders.caption(fresh["caption"]))
        moments = torch.cat([cached["latent_mean"], cached["latent_logvar"]], dim=1)[None]
        from_cache = encoders.sample(moments, torch.Generator().manual_seed(i))  # the same draw as from pixels
        from_pixels = encoders.latents(fresh["pixels"][None], torch.Generator().manual_seed(i))
        torch.testing.assert_close(from_cache, from_pixels, atol=1e-4, rtol=1e-4)

    g = torch.Generator().manual_seed(0)
    batch = prepare_batch([cache[0], cache[1]], FRAMES, RES, text_dropout=0.0, p_motion_free=0.0, generator=g)
    assert batch.pixels is None and batch.posterior.shape == (2, FRAMES, 8, RES // 2, RES // 2)
    assert batch.motion.tolist() == [True, False]  # the clip moves; the image is a still
    text, mask = encoders.text(batch.captions, batch.text)
    torch.testing.assert_close(text, encoders.text(batch.captions)[0])
    assert mask.any(dim=1).all()

    with pytest.raises(ValueError, match="built with resolution=32"):
        LatentCache(out, 64, FRAMES)
    other = build_random_pipeline("tiny", temporal=False, seed=1)
    assert encoder_fingerprint(other) != cache.index["fingerprint"]
    with pytest.raises(ValueError, match="other encoders"):
        cache.check_pipeline(other)

    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE encoder ran on a cached run")

    monkeypatch.setattr(type(pipe.vae), "encode", no_vae)
    run = tmp_path / "run"
    train(run_config(out, run, steps=1))  # data: the cache folder
    # same data order, dropout, posterior and noise draws as the pixel run: the same first loss
    assert losses(run)[0] == pytest.approx(losses(folder_run)[0], rel=1e-4)
