"""Contract tests for the Shapes World v1 generator (docs/shapes-world.md)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from gentron.data.shapes import (BACKGROUND, COLOURS, COUNT_WORDS, MOTIONS, PALETTE, RELATIONS, SHAPES, SIZE_WORDS,
                                 CaptionSpec, ObjectSpec, PlacedObject, PlacementError, Scene, ShapesWorldStream,
                                 caption_text, count_distinct_captions, distinct_in_draws, draw, held_out, layout, parse_caption, render,
                                 sample, sample_caption, validate)

S = 64


def scenes(video: bool, n: int, seed: int = 0, frames: int = 8):
    rng = np.random.default_rng(seed)
    return [layout(sample_caption(rng, video), S, frames if video else 1, rng) for _ in range(n)]


def single(shape: str, colour: str = "red", cx: float = 32.0, cy: float = 32.0, s: float = 20.0, angle: float = 0.0):
    obj = PlacedObject(colour, shape, np.array([cx]), np.array([cy]), np.array([s]), np.array([angle]))
    return draw(Scene(CaptionSpec("single", (ObjectSpec(colour, shape),)), S, 1, [obj]))[0]


# ----------------------------------------------------------------------------- captions


@pytest.mark.parametrize("spec,text", [
    (CaptionSpec("single", (ObjectSpec("orange", "circle"),)), "an orange circle"),
    (CaptionSpec("single", (ObjectSpec("red", "star", "big"),)), "a big red star"),
    (CaptionSpec("relation", (ObjectSpec("red", "square", "small"), ObjectSpec("orange", "star")), "to the left of"),
     "a small red square to the left of an orange star"),
    (CaptionSpec("count", (ObjectSpec("red", "square"),), count=2), "two red squares"),
    (CaptionSpec("count", (ObjectSpec("green", "star"),), count=3), "three green stars"),
    (CaptionSpec("video_single", (ObjectSpec("blue", "triangle", None, "moving left slowly"),)),
     "a blue triangle moving left slowly"),
    (CaptionSpec("video_pair", (ObjectSpec("white", "star", "big", "spinning"),
                                ObjectSpec("orange", "circle", "small", "growing"))),
     "a big white star spinning and a small orange circle growing"),
    (CaptionSpec("video_pair", (ObjectSpec("cyan", "square", None, "shrinking"),
                                ObjectSpec("purple", "circle", None, "standing still"))),
     "a cyan square shrinking and a purple circle standing still"),
])
def test_caption_wording_and_parse(spec, text):
    assert caption_text(spec) == text
    assert parse_caption(text) == spec
    assert parse_caption("  " + text.upper() + ". ") == spec


@pytest.mark.parametrize("text", [
    "", "a pink circle", "a red hexagon", "a red circle spinning", "a big red square growing",
    "a small red star shrinking", "a red square to the left of a red square", "four red squares",
    "two big red squares", "a red square above", "a red square moving sideways", "a red square and a blue circle",
    "a red square moving left and a red square moving right", "a red square standing still and",
])
def test_parse_rejects_outside_grammar(text):
    with pytest.raises(ValueError):
        parse_caption(text)


def test_caption_round_trip_on_samples():
    rng = np.random.default_rng(1)
    for video in (False, True):
        for _ in range(500):
            spec = sample_caption(rng, video)
            assert parse_caption(caption_text(spec)) == spec


def _all_objects(colours, shapes, sized=True):
    sizes = (None, *SIZE_WORDS) if sized else (None,)
    return [ObjectSpec(c, s, z) for z in sizes for c in colours for s in shapes]


def _enumerate(video: bool, colours, shapes) -> set[str]:
    """Every grammatical caption, by brute force over the raw grammar and the rules in validate()."""
    specs = []
    objs = _all_objects(colours, shapes)
    if not video:
        specs += [CaptionSpec("single", (o,)) for o in objs]
        specs += [CaptionSpec("relation", (a, b), relation=r) for a in objs for b in objs for r in RELATIONS]
        unsized = _all_objects(colours, shapes, sized=False)
        specs += [CaptionSpec("count", (o,), count=n) for o in unsized for n in COUNT_WORDS]
    else:
        moving = [ObjectSpec(o.colour, o.shape, o.size_word, m) for o in objs for m in MOTIONS]
        specs += [CaptionSpec("video_single", (o,)) for o in moving]
        specs += [CaptionSpec("video_pair", (a, b)) for a in moving for b in moving]
    texts = set()
    for spec in specs:
        try:
            texts.add(caption_text(spec))
        except ValueError:
            pass
    return texts


def test_distinct_captions_in_draws_grow_and_stay_in_the_train_split():
    few, more = distinct_in_draws(200), distinct_in_draws(2000)
    assert few < more <= 2000 and more < count_distinct_captions(False)
    assert distinct_in_draws(500, seed=3) == distinct_in_draws(500, seed=3)  # reproducible


def test_count_distinct_captions_matches_brute_force():
    assert count_distinct_captions(False) == len(_enumerate(False, COLOURS, SHAPES)) == 36640
    small = (("red", "orange"), ("circle", "star"))
    assert count_distinct_captions(True, *small) == len(_enumerate(True, *small))
    assert count_distinct_captions(True) == 2076272
    # Video singles over the full vocabulary: sum of allowed motions per object.
    singles = {t for t in _enumerate(True, COLOURS, ("circle",)) if " and " not in t}
    assert len(singles) == 8 * (15 + 14 + 14)


def test_held_out_split():
    texts = sorted(_enumerate(False, COLOURS, SHAPES))
    frac = np.mean([held_out(t) for t in texts])
    assert 0.08 < frac < 0.12
    rng = np.random.default_rng(2)
    assert all(held_out(caption_text(sample_caption(rng, False, "heldout"))) for _ in range(50))
    assert not any(held_out(caption_text(sample_caption(rng, True, "train"))) for _ in range(50))
    with pytest.raises(ValueError):
        sample_caption(rng, False, "test")


# ----------------------------------------------------------------------------- layout geometry


@pytest.mark.parametrize("video", [False, True])
def test_layout_obeys_contract(video):
    for scene in scenes(video, 150, seed=3):
        spec = scene.spec
        objs = scene.objects
        assert len(objs) == (spec.count or len(spec.objects))
        specs = spec.objects * (spec.count or 1)
        for o, os in zip(objs, specs):
            # Size words describe the first frame; no word means uniform in [0.2, 0.36] S.
            target = {"small": 0.20 * S, "big": 0.36 * S}.get(os.size_word)
            if target is not None:
                assert o.s[0] == pytest.approx(target)
            else:
                assert 0.20 * S - 1e-6 <= o.s[0] <= 0.36 * S + 1e-6
            assert np.all(o.s >= 0.12 * S - 1e-6) and np.all(o.s <= 0.5 * S + 1e-6)
            for t in range(scene.frames):
                x0, y0, x1, y1 = o.box(t)
                assert x0 >= 0 and y0 >= 0 and x1 <= S and y1 <= S
        for a, b in itertools.combinations(objs, 2):
            for t in range(scene.frames):
                ax0, ay0, ax1, ay1 = a.box(t)
                bx0, by0, bx1, by1 = b.box(t)
                assert max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1) >= 2
        if spec.relation:
            a, b = objs
            dx, dy = b.cx[0] - a.cx[0], b.cy[0] - a.cy[0]
            want = {"to the left of": dx > abs(dy), "to the right of": -dx > abs(dy),
                    "above": dy > abs(dx), "below": -dy > abs(dx)}
            assert want[spec.relation]


def test_motion_per_frame():
    speeds = {None: 0.045, "slowly": 0.03, "quickly": 0.06}
    directions = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    seen = set()
    for scene in scenes(True, 200, seed=4):
        for o, os in zip(scene.objects, scene.spec.objects):
            m = os.motion
            step = np.stack([np.diff(o.cx), np.diff(o.cy)], 1)
            if m.startswith("moving"):
                w = m.split()
                v = np.array(directions[w[1]]) * speeds[w[2] if len(w) > 2 else None] * S
                np.testing.assert_allclose(step, np.broadcast_to(v, step.shape), atol=1e-9)
                assert np.ptp(o.s) == 0 and np.ptp(o.angle) == 0
            else:
                assert np.abs(step).max() == 0
            if m == "spinning":
                np.testing.assert_allclose(np.diff(o.angle), 15.0)
            if m in ("growing", "shrinking"):
                np.testing.assert_allclose(o.s[1:] / o.s[:-1], 1.08 if m == "growing" else 1 / 1.08)
            if m == "standing still":
                assert np.ptp(o.s) == 0 and np.ptp(o.angle) == 0
            seen.add(m.split()[0])
    assert seen == {"moving", "spinning", "growing", "shrinking", "standing"}


def test_unplaceable_raises():
    rng = np.random.default_rng(0)
    spec = parse_caption("a big red square moving left quickly")
    with pytest.raises(PlacementError):
        layout(spec, S, 20, rng)
    with pytest.raises(PlacementError):
        layout(parse_caption("a big red square shrinking"), S, 16, rng)  # 0.36 / 1.08^15 < 0.12


# ----------------------------------------------------------------------------- pixels


def test_palette_background_and_border():
    for scene in scenes(False, 30, seed=5) + scenes(True, 10, seed=5):
        frames = draw(scene)
        assert frames.dtype == np.uint8 and frames.shape == (scene.frames, S, S, 3)
        border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], 1)
        assert np.all(border == BACKGROUND)  # every object stays inside the canvas
        # Every pixel is the background blended with exactly one palette colour.
        px = frames.reshape(-1, 3).astype(float)
        bg = np.array(BACKGROUND, float)
        cols = np.array([PALETTE[o.colour] for o in scene.objects], float)
        a = np.clip(((px - bg) @ (cols - bg).T) / ((cols - bg) ** 2).sum(1), 0, 1)
        resid = np.linalg.norm(px[:, None] - bg - a[..., None] * (cols - bg), axis=-1).min(1)
        assert resid.max() < 3


def test_shape_geometry_pixels():
    """Areas, centres and fill match the contract's shape definitions."""
    area = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "star": 5 * 0.5 * 0.2 * np.sin(np.radians(36))}
    s = 24.0
    yy, xx = np.mgrid[:S, :S] + 0.5
    for shape in SHAPES:
        img = single(shape, "white", 30.3, 33.6, s).astype(float)
        cover = (img[..., 0] - 16) / (240 - 16)
        assert cover.sum() == pytest.approx(area[shape] * s * s, rel=0.02)
        rows, cols = np.nonzero(cover > 0.5)
        # Unrotated, the shape fits the s x s box centred on (cx, cy).
        assert cols.min() + 0.5 >= 30.3 - s / 2 - 0.5 and cols.max() + 0.5 <= 30.3 + s / 2 + 0.5
        assert rows.min() + 0.5 >= 33.6 - s / 2 - 0.5 and rows.max() + 0.5 <= 33.6 + s / 2 + 0.5
        centroid_y = (cover * yy).sum() / cover.sum()
        expect_y = 33.6 + (s / 6 if shape == "triangle" else 0.0)  # triangle centroid lies below the box centre
        assert centroid_y == pytest.approx(expect_y, abs=0.15)  # 4x supersampling: edges within 1/8 px
        assert (cover * xx).sum() / cover.sum() == pytest.approx(30.3, abs=0.15)
    # Colours are exact in the interior.
    for colour, rgb in PALETTE.items():
        assert tuple(single("square", colour)[32, 32]) == rgb


def test_pixel_masks_apart():
    for scene in scenes(False, 40, seed=6) + scenes(True, 15, seed=6):
        masks = [draw(Scene(scene.spec, S, scene.frames, [o])).astype(int).sum(-1) != 48 for o in scene.objects]
        for a, b in itertools.combinations(masks, 2):
            grown = a.copy()  # dilate by one pixel (8-neighbourhood): touching or 1 px apart would meet
            for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                grown |= np.roll(a, (dy, dx), axis=(1, 2))
            assert not np.any(grown & b)


def test_image_caption_repeats_over_frames():
    spec = parse_caption("a red square above a blue circle")
    out = render(spec, S, 4, np.random.default_rng(0))
    assert out.shape == (4, S, S, 3) and all(np.array_equal(out[0], f) for f in out)


# ----------------------------------------------------------------------------- sampling and streams


def test_sample_deterministic_by_seed():
    a = sample(np.random.default_rng(11), S, 8, True)
    b = sample(np.random.default_rng(11), S, 8, True)
    assert a[1] == b[1] and np.array_equal(a[0], b[0]) and a[2] == b[2]
    c = sample(np.random.default_rng(12), S, 8, True)
    assert c[1] != a[1] or not np.array_equal(a[0], c[0])


def test_sampling_covers_kinds():
    rng = np.random.default_rng(8)
    kinds = {sample_caption(rng, v).kind for v in (False, True) for _ in range(100)}
    assert kinds == {"single", "relation", "count", "video_single", "video_pair"}


def test_stream_shapes_and_determinism():
    it = iter(ShapesWorldStream(size=32, frames=2, video=True, seed=3))
    ex = next(it)
    assert ex["pixels"].shape == (2, 3, 32, 32) and ex["pixels"].dtype == torch.float32
    assert ex["pixels"].min() >= -1 and ex["pixels"].max() <= 1 and isinstance(ex["caption"], str)
    again = next(iter(ShapesWorldStream(size=32, frames=2, video=True, seed=3)))
    assert again["caption"] == ex["caption"] and torch.equal(again["pixels"], ex["pixels"])
    batch = next(iter(ShapesWorldStream(size=32, frames=1, seed=0, batch_size=4)))
    assert batch["pixels"].shape == (4, 1, 3, 32, 32) and len(batch["caption"]) == 4
    assert not any(held_out(c) for c in batch["caption"])  # the default split is "train"


def test_stream_worker_aware():
    loader = torch.utils.data.DataLoader(ShapesWorldStream(size=32, seed=5, batch_size=3), batch_size=None,
                                         num_workers=2)
    it = iter(loader)
    first, second = next(it), next(it)  # worker 0 then worker 1: different streams
    assert first["caption"] != second["caption"]


def test_validate_rejects_bad_specs():
    with pytest.raises(ValueError):
        validate(CaptionSpec("single", (ObjectSpec("red", "circle", None, "spinning"),)))
    with pytest.raises(ValueError):
        validate(CaptionSpec("video_single", (ObjectSpec("red", "circle", None, "spinning"),)))
    with pytest.raises(ValueError):
        validate(CaptionSpec("count", (ObjectSpec("red", "circle", "big"),), count=2))
