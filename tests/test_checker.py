"""The Shapes World checker, validated on the generator's own renders (raw and after H.264)."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from gentron.data.shapes import (COLOURS, SHAPES, CaptionSpec, ObjectSpec, PlacedObject, Scene, caption_text, draw,
                                 parse_caption, render, sample)
from gentron.evaluation.checker import (REFERENCE_PHASE, SHAPE_MOMENTS, SYMMETRY, _moments, check, connected_components,
                                        detect, dynamic_degree)

S = 64
OPPOSITE_RELATION = {"to the left of": "to the right of", "to the right of": "to the left of",
                     "above": "below", "below": "above"}
OPPOSITE_DIRECTION = {"left": "right", "right": "left", "up": "down", "down": "up"}


def one_object(shape, colour="red", cx=32.0, cy=32.0, s=20.0, angle=0.0, size=S):
    obj = PlacedObject(colour, shape, np.array([cx]), np.array([cy]), np.array([s]), np.array([angle]))
    return draw(Scene(CaptionSpec("single", (ObjectSpec(colour, shape),)), size, 1, [obj]))[0]


def wrong_captions(spec: CaptionSpec, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Deliberately wrong captions for a picture of `spec`: (what changed, caption)."""
    o = spec.objects
    out = []
    if spec.kind == "single":
        colour = [c for c in COLOURS if c != o[0].colour][rng.integers(7)]
        out.append(("colour", CaptionSpec("single", (ObjectSpec(colour, o[0].shape, o[0].size_word),))))
    elif spec.kind == "relation":
        # Two objects alike but for the size word can read either way round when one has no size word.
        if (o[0].colour, o[0].shape) != (o[1].colour, o[1].shape):
            out.append(("relation", CaptionSpec("relation", o, OPPOSITE_RELATION[spec.relation])))
    elif spec.kind == "count":
        out.append(("count", CaptionSpec("count", o, count=5 - spec.count)))
    else:
        flipped = []
        for ob in o:
            words = ob.motion.split()
            if words[0] == "moving":
                words[1] = OPPOSITE_DIRECTION[words[1]]
                motion = " ".join(words)
            else:
                motion = {"spinning": "standing still", "standing still": "moving up", "growing": "standing still",
                          "shrinking": "standing still"}[ob.motion]
            flipped.append(ObjectSpec(ob.colour, ob.shape, ob.size_word, motion))
        out.append(("motion", CaptionSpec(spec.kind, tuple(flipped))))
    if len(o) == 2 and o[0].colour != o[1].colour and o[0].shape != o[1].shape:
        # Swap colours between different shapes (between like shapes the swap may describe the same scene).
        a = ObjectSpec(o[1].colour, o[0].shape, o[0].size_word, o[0].motion)
        b = ObjectSpec(o[0].colour, o[1].shape, o[1].size_word, o[1].motion)
        out.append(("swapped colours", CaptionSpec(spec.kind, (a, b), spec.relation)))
    return [(name, caption_text(s)) for name, s in out]


def h264_round_trip(frames: np.ndarray) -> np.ndarray:
    """Encode uint8 (N, H, W, 3) as one H.264 yuv420p MP4 at 4 fps (x264's default CRF 23) and decode."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    n, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "clip.mp4")
        writer = imageio_ffmpeg.write_frames(path, (w, h), fps=4, codec="libx264", pix_fmt_out="yuv420p",
                                             quality=None, ffmpeg_log_level="error")
        writer.send(None)
        for f in frames:
            writer.send(np.ascontiguousarray(f))
        writer.close()
        reader = imageio_ffmpeg.read_frames(path)
        next(reader)  # metadata
        out = np.stack([np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader])
    assert out.shape == frames.shape
    return out


@pytest.fixture(scope="module")
def renders():
    """100 images and 40 eight-frame videos with their specs, and their H.264 round-trips."""
    rng = np.random.default_rng(2024)
    images = [sample(rng, S, 1, False) for _ in range(100)]
    videos = [sample(rng, S, 8, True) for _ in range(40)]
    return images, videos


def rate(results):
    return float(np.mean(results))


# ----------------------------------------------------------------------------- building blocks


def test_connected_components_matches_flood_fill():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((17, 23)) < 0.45
        labels, n = connected_components(mask)
        assert labels.max() == n and np.all((labels > 0) == mask)
        # Reference: breadth-first flood fill, 4-connected.
        seen, count = np.zeros_like(mask), 0
        for i, j in zip(*np.nonzero(mask)):
            if seen[i, j]:
                continue
            count += 1
            stack, comp = [(i, j)], set()
            seen[i, j] = True
            while stack:
                y, x = stack.pop()
                comp.add(labels[y, x])
                for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= yy < mask.shape[0] and 0 <= xx < mask.shape[1] and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        stack.append((yy, xx))
            assert len(comp) == 1
        assert count == n


def test_shape_moment_templates():
    """The hard-coded templates are the moments of each shape drawn large."""
    size = 256
    yy, xx = np.mgrid[:size, :size] + 0.5
    for shape in SHAPES:
        img = one_object(shape, "white", 128.0, 128.0, 240.0, size=size).astype(np.float64)
        w = (img[..., 0] - 16) / 224
        _, _, m = _moments(w.ravel(), xx.ravel(), yy.ravel())
        np.testing.assert_allclose(np.abs(m), SHAPE_MOMENTS[shape], atol=0.002)
        if shape in SYMMETRY:
            n = SYMMETRY[shape]
            assert abs(np.angle(m[n - 2] * np.exp(-1j * REFERENCE_PHASE[shape]))) < 0.02


@pytest.mark.parametrize("shape", SHAPES)
def test_detect_single_objects_rotated_and_small(shape):
    for s, angle in ((0.12 * S, 0.0), (0.2 * S, 15.0), (0.36 * S, 40.0), (0.5 * S, 105.0)):
        if shape == "circle":
            angle = 0.0
        for colour in COLOURS:
            dets = detect(one_object(shape, colour, 30.7, 33.2, s, angle))
            assert len(dets) == 1
            d = dets[0]
            assert (d.colour, d.shape) == (colour, shape)
            assert d.cx == pytest.approx(30.7, abs=0.5) and d.cy == pytest.approx(33.2, abs=0.5)
            assert d.s == pytest.approx(s, rel=0.05)
            if shape != "circle":
                period = 360.0 if shape == "triangle" else 360.0 / SYMMETRY[shape]
                err = (d.angle - angle + period / 2) % period - period / 2
                assert abs(err) < 3.0


def test_size_words_and_blank_frames():
    assert detect(np.full((S, S, 3), 16, np.uint8)) == []
    small = detect(one_object("square", s=0.2 * S))[0]
    big = detect(one_object("square", s=0.36 * S))[0]
    assert (small.size_word, big.size_word) == ("small", "big")
    assert not check("a red square", np.full((S, S, 3), 16, np.uint8))["correct"]


def test_check_api():
    img = render(parse_caption("a big red square above a blue star"), S, 1, np.random.default_rng(0))
    res = check("a big red square above a blue star", img[0])  # a single (H, W, 3) image works too
    assert res["correct"] and res["spatial"] and res["attribute"] and res["count"] is None
    assert res["kind"] == "relation" and res["dynamic_degree"] == 0.0
    with pytest.raises(ValueError):
        check("a red hexagon", img)
    with pytest.raises(ValueError):
        check("a red square", img.astype(np.float32))
    two = render(parse_caption("two red squares"), S, 1, np.random.default_rng(1))
    assert check("two red squares", two)["correct"] and not check("a red square", two)["correct"]
    # colour and shape alone: partial credit that is still judged per captioned object
    circle = render(parse_caption("a red circle"), S, 1, np.random.default_rng(2))
    as_square = check("a red square", circle)
    assert as_square["colour"] and not as_square["shape"] and not as_square["attribute"]
    as_blue = check("a blue circle", circle)
    assert as_blue["shape"] and not as_blue["colour"]
    swapped = check("a big blue square above a red star", img)  # both colours there, bound the wrong way
    assert swapped["colour"] and swapped["shape"] and not swapped["attribute"]
    assert not check("a red square above a red star", img)["colour"]  # one red object cannot serve two


def test_dynamic_degree():
    still = render(parse_caption("a red square standing still"), S, 8, np.random.default_rng(0))
    moving = render(parse_caption("a red square moving left quickly"), S, 8, np.random.default_rng(0))
    assert dynamic_degree(still) == 0.0 < dynamic_degree(moving)
    assert check("a red square moving left quickly", moving)["dynamic_degree"] == pytest.approx(dynamic_degree(moving))


# ----------------------------------------------------------------------------- validation on renders


def _validate(items, transform=lambda f: f):
    true, wrong = [], {}
    rng = np.random.default_rng(0)
    for frames, caption, spec in items:
        frames = transform(frames)
        true.append(check(caption, frames)["correct"])
        for name, bad in wrong_captions(spec, rng):
            wrong.setdefault(name, []).append(check(bad, frames)["correct"])
    return rate(true), {k: rate(v) for k, v in wrong.items()}


def test_checker_on_true_and_wrong_image_captions(renders):
    images, _ = renders
    ok, wrong = _validate(images)
    assert ok >= 0.98
    assert set(wrong) == {"colour", "relation", "count", "swapped colours"}
    assert all(r <= 0.02 for r in wrong.values()), wrong


def test_checker_on_true_and_wrong_video_captions(renders):
    _, videos = renders
    ok, wrong = _validate(videos)
    assert ok >= 0.98
    assert set(wrong) == {"motion", "swapped colours"}
    assert all(r <= 0.02 for r in wrong.values()), wrong
    res = check(videos[0][1], videos[0][0])
    assert res["objects_every_frame"] and res["temporal_consistency"] and res["direction"]


def test_checker_after_h264_round_trip(renders):
    images, videos = renders
    # One clip per set keeps ffmpeg start-up cheap; each picture or video becomes a run of frames in it.
    coded_images = h264_round_trip(np.concatenate([f for f, _, _ in images]))
    coded_videos = h264_round_trip(np.concatenate([f for f, _, _ in videos])).reshape(len(videos), 8, S, S, 3)
    ok_i, wrong_i = _validate([(coded_images[i : i + 1], c, s) for i, (_, c, s) in enumerate(images)])
    ok_v, wrong_v = _validate([(coded_videos[i], c, s) for i, (_, c, s) in enumerate(videos)])
    assert ok_i >= 0.98 and ok_v >= 0.95
    assert all(r <= 0.02 for r in {**wrong_i, **wrong_v}.values()), (wrong_i, wrong_v)


def test_larger_canvas():
    rng = np.random.default_rng(5)
    for video in (False, True):
        for _ in range(5):
            frames, caption, _ = sample(rng, 128, 8 if video else 1, video)
            assert check(caption, frames)["correct"], caption
