"""Shapes World v1: procedurally rendered images and short videos of coloured shapes, with captions.

This is the reference generator for the contract in docs/shapes-world.md. Read it top to bottom:
vocabulary -> caption specs -> caption text and its parser -> counting and the held-out split ->
sampling -> layout (where every object is on every frame) -> rasterisation -> torch stream.

Coordinates are continuous pixels: the canvas spans [0, S] x [0, S], pixel (i, j) covers
[j, j+1) x [i, i+1), y grows downwards, angles are degrees clockwise on screen.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

# ----------------------------------------------------------------------------- vocabulary

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 190, 70),
    "cyan": (40, 210, 220),
    "blue": (40, 80, 230),
    "purple": (150, 60, 210),
    "white": (240, 240, 240),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (16, 16, 16)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZE_WORDS: tuple[str, ...] = ("small", "big")
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
SPEED_WORDS: tuple[str, ...] = ("slowly", "quickly")
MOTIONS: tuple[str, ...] = tuple(
    f"moving {d}" + (f" {w}" if w else "") for d in DIRECTIONS for w in (None, *SPEED_WORDS)
) + ("spinning", "growing", "shrinking", "standing still")
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three"}
IMAGE_KINDS: tuple[str, ...] = ("single", "relation", "count")
VIDEO_KINDS: tuple[str, ...] = ("video_single", "video_pair")

# Geometry of the contract, as fractions of the canvas side S (per frame where it moves).
SIZE_FRACTION: dict[str, float] = {"small": 0.20, "big": 0.36}
MIN_EXTENT, MAX_EXTENT = 0.12, 0.50  # bounds on s for growing / shrinking objects
SPEED: dict[str | None, float] = {None: 0.045, "slowly": 0.03, "quickly": 0.06}
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPIN_DEGREES = 15.0
GROWTH = 1.08
STAR_INNER = 0.4  # inner radius / outer radius

# The generator is stricter than the contract so that a checker (and a model) sees unambiguous
# pictures: objects sit >= GAP apart and >= MARGIN from the border, and a relation holds by
# RELATION_MARGIN (|dx| - |dy| for left/right, |dy| - |dx| for above/below).
GAP_FRACTION = 0.05
BORDER_PX = 1.0
RELATION_MARGIN = 0.06
SUPERSAMPLE = 4  # anti-aliasing: SUPERSAMPLE^2 point samples per pixel, box filtered

# ----------------------------------------------------------------------------- caption specs


@dataclass(frozen=True)
class ObjectSpec:
    """One captioned object: `[size_word] colour shape [motion]`."""

    colour: str
    shape: str
    size_word: str | None = None
    motion: str | None = None


@dataclass(frozen=True)
class CaptionSpec:
    """The structure of one caption. `count` is set for kind "count", `relation` for "relation"."""

    kind: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    count: int | None = None


def motion_allowed(obj: ObjectSpec, motion: str) -> bool:
    """The contract's motion rules: circles never spin, big never grows, small never shrinks."""
    if motion == "spinning":
        return obj.shape != "circle"
    if motion == "growing":
        return obj.size_word != "big"
    if motion == "shrinking":
        return obj.size_word != "small"
    return motion in MOTIONS


def validate(spec: CaptionSpec) -> None:
    """Raise ValueError if `spec` is not a caption of the grammar."""

    def check_object(o: ObjectSpec, video: bool, sized: bool = True) -> None:
        if o.colour not in PALETTE:
            raise ValueError(f"unknown colour {o.colour!r}; expected one of {COLOURS}")
        if o.shape not in SHAPES:
            raise ValueError(f"unknown shape {o.shape!r}; expected one of {SHAPES}")
        if o.size_word is not None and (not sized or o.size_word not in SIZE_WORDS):
            raise ValueError(f"size word {o.size_word!r} not allowed here")
        if not video and o.motion is not None:
            raise ValueError(f"an image caption has no motion, got {o.motion!r}")
        if video and (o.motion is None or not motion_allowed(o, o.motion)):
            raise ValueError(f"motion {o.motion!r} not allowed for a {object_phrase(o)}")

    n_objects = {"single": 1, "relation": 2, "count": 1, "video_single": 1, "video_pair": 2}
    if spec.kind not in n_objects:
        raise ValueError(f"unknown caption kind {spec.kind!r}")
    if len(spec.objects) != n_objects[spec.kind]:
        raise ValueError(f"a {spec.kind} caption has {n_objects[spec.kind]} object(s), got {len(spec.objects)}")
    video = spec.kind in VIDEO_KINDS
    for o in spec.objects:
        check_object(o, video, sized=spec.kind != "count")
    if (spec.kind == "relation") != (spec.relation is not None) or (spec.relation and spec.relation not in RELATIONS):
        raise ValueError(f"bad relation {spec.relation!r} for a {spec.kind} caption")
    if (spec.kind == "count") != (spec.count is not None) or (spec.count is not None and spec.count not in COUNT_WORDS):
        raise ValueError(f"bad count {spec.count!r} for a {spec.kind} caption")
    if len(spec.objects) == 2:
        a, b = ((o.size_word, o.colour, o.shape) for o in spec.objects)
        if a == b:  # the checker could not tell which is which
            raise ValueError("a caption never names two identical objects (same size word, colour and shape)")


# ----------------------------------------------------------------------------- caption text <-> spec


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(obj: ObjectSpec) -> str:
    """`[size] colour shape` without article or motion."""
    return " ".join(w for w in (obj.size_word, obj.colour, obj.shape) if w)


def caption_text(spec: CaptionSpec) -> str:
    """The caption's exact wording under the contract."""
    validate(spec)
    objs = [_with_article(object_phrase(o)) for o in spec.objects]
    if spec.kind == "single":
        return objs[0]
    if spec.kind == "relation":
        return f"{objs[0]} {spec.relation} {objs[1]}"
    if spec.kind == "count":
        o = spec.objects[0]
        return f"{COUNT_WORDS[spec.count]} {o.colour} {o.shape}s"
    parts = [f"{obj} {o.motion}" for obj, o in zip(objs, spec.objects)]
    return " and ".join(parts)


class _Words:
    """A cursor over a caption's words that matches (multi-word) phrases."""

    def __init__(self, text: str):
        self.text, self.words, self.i = text, text.split(), 0

    def done(self) -> bool:
        return self.i == len(self.words)

    def accept(self, options: tuple[str, ...]) -> str | None:
        for phrase in sorted(options, key=lambda p: -len(p.split())):  # longest first: "moving left slowly"
            n = len(phrase.split())
            if self.words[self.i : self.i + n] == phrase.split():
                self.i += n
                return phrase
        return None

    def expect(self, options: tuple[str, ...], what: str) -> str:
        got = self.accept(options)
        if got is None:
            found = " ".join(self.words[self.i : self.i + 3]) or "the end"
            raise ValueError(f"caption {self.text!r} is outside Shapes World: expected {what} at word "
                             f"{self.i + 1}, found {found!r}")
        return got

    def expect_end(self) -> None:
        if not self.done():
            self.expect((), "the end of the caption")


def _parse_object(w: _Words) -> ObjectSpec:
    w.expect(("a", "an"), "'a' or 'an'")  # either article is accepted; caption_text writes the right one
    size = w.accept(SIZE_WORDS)
    colour = w.expect(COLOURS, "a colour")
    shape = w.expect(SHAPES, "a shape")
    return ObjectSpec(colour, shape, size)


def parse_caption(text: str) -> CaptionSpec:
    """Inverse of caption_text; ignores case, extra spaces and a final full stop. ValueError outside the grammar."""
    w = _Words(" ".join(text.lower().strip().rstrip(".").split()))
    if w.accept(tuple(COUNT_WORDS.values())):
        count = next(n for n, word in COUNT_WORDS.items() if word == w.words[w.i - 1])
        colour = w.expect(COLOURS, "a colour")
        shape = w.expect(tuple(s + "s" for s in SHAPES), "a plural shape")[:-1]
        w.expect_end()
        spec = CaptionSpec("count", (ObjectSpec(colour, shape),), count=count)
    else:
        first = _parse_object(w)
        if w.done():
            spec = CaptionSpec("single", (first,))
        elif relation := w.accept(RELATIONS):
            second = _parse_object(w)
            w.expect_end()
            spec = CaptionSpec("relation", (first, second), relation=relation)
        else:
            first = ObjectSpec(first.colour, first.shape, first.size_word, w.expect(MOTIONS, "a relation or a motion"))
            if w.done():
                spec = CaptionSpec("video_single", (first,))
            else:
                w.expect(("and",), "'and' or the end")
                second = _parse_object(w)
                second = ObjectSpec(second.colour, second.shape, second.size_word, w.expect(MOTIONS, "a motion"))
                w.expect_end()
                spec = CaptionSpec("video_pair", (first, second))
    try:
        validate(spec)
    except ValueError as e:
        raise ValueError(f"caption {text!r} breaks a Shapes World rule: {e}") from None
    return spec


# ----------------------------------------------------------------------------- counting and split


def count_distinct_captions(video: bool, colours: tuple[str, ...] = COLOURS,
                            shapes: tuple[str, ...] = SHAPES) -> int:
    """How many distinct captions the grammar makes (optionally over a smaller vocabulary)."""
    objects = [ObjectSpec(c, s, z) for z in (None, *SIZE_WORDS) for c in colours for s in shapes]
    if not video:
        n = len(objects)
        return n + n * (n - 1) * len(RELATIONS) + len(COUNT_WORDS) * len(colours) * len(shapes)
    # m(o) motions are allowed for object o; a pair is any two (object, motion) with distinct objects.
    m = [sum(motion_allowed(o, mo) for mo in MOTIONS) for o in objects]
    singles = sum(m)
    return singles + singles**2 - sum(k * k for k in m)


def distinct_in_draws(n: int, video: bool = False, split: str = "train", seed: int = 0) -> int:
    """How many distinct captions ``n`` draws from the training stream's caption distribution give: what a
    run that rendered ``n`` samples saw (the renderer redraws a caption only when it cannot place it, rarely)."""
    rng = np.random.default_rng(seed)
    return len({caption_text(sample_caption(rng, video, split)) for _ in range(n)})


def held_out(caption: str) -> bool:
    """Deterministic ~10% evaluation split, by a hash of the caption text (stable across processes)."""
    digest = hashlib.sha256(caption.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 10 == 0


# ----------------------------------------------------------------------------- sampling

KIND_WEIGHTS = {False: {"single": 0.25, "relation": 0.5, "count": 0.25}, True: {"video_single": 0.5, "video_pair": 0.5}}
SIZE_WORD_WEIGHTS = {None: 0.5, "small": 0.25, "big": 0.25}
# Motion families are drawn evenly-ish so that the 12 "moving ..." phrases do not drown the rest.
MOTION_FAMILY_WEIGHTS = {"moving": 0.5, "spinning": 0.125, "growing": 0.125, "shrinking": 0.125,
                         "standing still": 0.125}


def _choice(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[rng.choice(len(keys), p=p / p.sum())]


def _sample_object(rng: np.random.Generator, video: bool, sized: bool = True) -> ObjectSpec:
    colour = COLOURS[rng.integers(len(COLOURS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    size = _choice(rng, SIZE_WORD_WEIGHTS) if sized else None
    obj = ObjectSpec(colour, shape, size)
    if not video:
        return obj
    while True:
        motion = _choice(rng, MOTION_FAMILY_WEIGHTS)
        if motion == "moving":
            speed = (None, *SPEED_WORDS)[rng.integers(3)]
            motion = f"moving {DIRECTIONS[rng.integers(4)]}" + (f" {speed}" if speed else "")
        if motion_allowed(obj, motion):
            return ObjectSpec(colour, shape, size, motion)


def sample_caption(rng: np.random.Generator, video: bool = False, split: str = "all") -> CaptionSpec:
    """Draw a caption spec from the grammar; split "train" / "heldout" keeps only that side of held_out."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    while True:
        kind = _choice(rng, KIND_WEIGHTS[video])
        if kind == "count":
            spec = CaptionSpec(kind, (_sample_object(rng, False, sized=False),), count=int(rng.integers(2, 4)))
        elif kind in ("single", "video_single"):
            spec = CaptionSpec(kind, (_sample_object(rng, video),))
        else:
            objs = (_sample_object(rng, video), _sample_object(rng, video))
            relation = RELATIONS[rng.integers(len(RELATIONS))] if kind == "relation" else None
            spec = CaptionSpec(kind, objs, relation=relation)
            a, b = ((o.size_word, o.colour, o.shape) for o in objs)
            if a == b:
                continue  # identical objects are outside the grammar
        if split == "all" or held_out(caption_text(spec)) == (split == "heldout"):
            return spec


# ----------------------------------------------------------------------------- layout


class PlacementError(ValueError):
    """The caption cannot be drawn on this canvas over this many frames (or placement gave up)."""


@dataclass
class PlacedObject:
    """A concrete object: box centre (cx, cy), extent s (pixels) and angle (degrees clockwise), per frame."""

    colour: str
    shape: str
    cx: np.ndarray
    cy: np.ndarray
    s: np.ndarray
    angle: np.ndarray

    def outline(self, t: int) -> np.ndarray | None:
        """Polygon vertices (K, 2) at frame t; None for a circle."""
        return shape_polygon(self.shape, float(self.cx[t]), float(self.cy[t]), float(self.s[t]), float(self.angle[t]))

    def box(self, t: int) -> tuple[float, float, float, float]:
        """Exact axis-aligned bounds (x0, y0, x1, y1) of what is drawn at frame t."""
        poly = self.outline(t)
        if poly is None:
            r = self.s[t] / 2
            return self.cx[t] - r, self.cy[t] - r, self.cx[t] + r, self.cy[t] + r
        return poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()


@dataclass
class Scene:
    """A caption spec made concrete on a canvas of side `size` over `frames` frames."""

    spec: CaptionSpec
    size: int
    frames: int
    objects: list[PlacedObject]


def shape_polygon(shape: str, cx: float, cy: float, s: float, angle: float = 0.0) -> np.ndarray | None:
    """Vertices of a shape with box centre (cx, cy), extent s, rotated clockwise by `angle` degrees."""
    h = s / 2
    if shape == "circle":
        return None
    if shape == "square":
        pts = np.array([(-h, -h), (h, -h), (h, h), (-h, h)])
    elif shape == "triangle":  # isosceles, apex up, base s on the box's bottom edge, height s
        pts = np.array([(0.0, -h), (h, h), (-h, h)])
    elif shape == "star":  # five points, one straight up; radii alternate outer s/2 and inner 0.4 s/2
        k = np.arange(10)
        radius = np.where(k % 2 == 0, h, STAR_INNER * h)
        theta = np.deg2rad(-90.0 + 36.0 * k)
        pts = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    a = math.radians(angle)  # with y down, the usual rotation matrix turns clockwise on screen
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ rot.T + np.array([cx, cy])


def _trajectory(obj: ObjectSpec, size: int, frames: int, rng: np.random.Generator):
    """Per frame: extent s (px), angle (deg) and centre offset (dx, dy) from frame 0, for obj's motion.

    PlacementError if the size rules cannot hold over this many frames."""
    t = np.arange(frames, dtype=np.float64)
    rate = {"growing": GROWTH, "shrinking": 1 / GROWTH}.get(obj.motion, 1.0)
    lo, hi = SIZE_FRACTION["small"], SIZE_FRACTION["big"]
    # Growing / shrinking must keep MIN_EXTENT <= s <= MAX_EXTENT on every frame.
    if rate > 1:
        hi = min(hi, MAX_EXTENT / rate ** (frames - 1))
    elif rate < 1:
        lo = max(lo, MIN_EXTENT / rate ** (frames - 1))
    if obj.size_word is not None:
        s0 = SIZE_FRACTION[obj.size_word]
        if not lo - 1e-9 <= s0 <= hi + 1e-9:
            raise PlacementError(f"a {obj.size_word} object cannot be {obj.motion} for {frames} frames")
    elif lo > hi:
        raise PlacementError(f"no extent lets an object be {obj.motion} for {frames} frames")
    else:
        s0 = rng.uniform(lo, hi)
    s = s0 * size * rate**t
    angle = SPIN_DEGREES * t if obj.motion == "spinning" else np.zeros(frames)
    dx = dy = np.zeros(frames)
    if obj.motion and obj.motion.startswith("moving"):
        words = obj.motion.split()  # "moving DIRECTION [SPEED]"
        step = SPEED[words[2] if len(words) > 2 else None] * size
        ux, uy = DIRECTION_VECTORS[words[1]]
        dx, dy = ux * step * t, uy * step * t
    return s, angle, dx, dy


def _box_offsets(shape: str, s: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(F, 4) bounds (x0, y0, x1, y1) of the drawn shape relative to its box centre, per frame."""
    out = []
    for si, ai in zip(s, angle):
        poly = shape_polygon(shape, 0.0, 0.0, float(si), float(ai))
        out.append((-si / 2, -si / 2, si / 2, si / 2) if poly is None else (*poly.min(0), *poly.max(0)))
    return np.array(out)


def _relation_holds(relation: str, a: PlacedObject, b: PlacedObject, margin: float) -> bool:
    dx, dy = b.cx[0] - a.cx[0], b.cy[0] - a.cy[0]  # from A to B
    if relation == "to the left of":
        return dx - abs(dy) > margin
    if relation == "to the right of":
        return -dx - abs(dy) > margin
    if relation == "above":
        return dy - abs(dx) > margin
    return -dy - abs(dx) > margin  # below


def _apart(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """Boxes (F, 4) are at least `gap` apart along x or y on every frame."""
    sep_x = np.maximum(b[:, 0] - a[:, 2], a[:, 0] - b[:, 2])
    sep_y = np.maximum(b[:, 1] - a[:, 3], a[:, 1] - b[:, 3])
    return bool(np.all(np.maximum(sep_x, sep_y) >= gap))


def layout(spec: CaptionSpec, size: int, frames: int, rng: np.random.Generator, max_tries: int = 2000) -> Scene:
    """Place the caption's objects on every frame by rejection sampling; PlacementError when it cannot."""
    validate(spec)
    if size % 16 or not 32 <= size <= 256:
        raise ValueError(f"canvas side must be a multiple of 16 in [32, 256], got {size}")
    objs = spec.objects * (spec.count or 1)
    paths = []
    for o in objs:
        s, angle, dx, dy = _trajectory(o, size, frames, rng)
        bounds = _box_offsets(o.shape, s, angle) + np.stack([dx, dy, dx, dy], axis=1)
        # First-frame centres for which the whole path stays inside the canvas (with a border).
        lo = BORDER_PX - bounds[:, :2].min(0)
        hi = size - BORDER_PX - bounds[:, 2:].max(0)
        if np.any(lo > hi):
            raise PlacementError(f"a {object_phrase(o)} {o.motion or ''} does not fit a {size}px canvas "
                                 f"for {frames} frames")
        paths.append((o, s, angle, dx, dy, bounds, lo, hi))

    gap = max(2.0, GAP_FRACTION * size)
    for _ in range(max_tries):
        placed, boxes = [], []
        for o, s, angle, dx, dy, bounds, lo, hi in paths:
            c = rng.uniform(lo, hi)
            placed.append(PlacedObject(o.colour, o.shape, c[0] + dx, c[1] + dy, s, angle))
            boxes.append(bounds + np.tile(c, 2))
        if not all(_apart(boxes[i], boxes[j], gap) for i in range(len(boxes)) for j in range(i)):
            continue
        if spec.relation and not _relation_holds(spec.relation, placed[0], placed[1], RELATION_MARGIN * size):
            continue
        return Scene(spec, size, frames, placed)
    raise PlacementError(f"could not place {caption_text(spec)!r} on a {size}px canvas for {frames} frames")


# ----------------------------------------------------------------------------- rasterisation


def _inside(poly: np.ndarray | None, cx: float, cy: float, s: float, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Which sample points (px, py) lie inside the polygon (even-odd rule), or the circle if poly is None."""
    if poly is None:
        return (px - cx) ** 2 + (py - cy) ** 2 <= (s / 2) ** 2
    inside = np.zeros(np.broadcast_shapes(px.shape, py.shape), dtype=bool)
    for (xa, ya), (xb, yb) in zip(poly, np.roll(poly, -1, axis=0)):
        if ya == yb:
            continue  # horizontal edges never cross a horizontal ray
        crosses = (ya > py) != (yb > py)
        x_at = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (px < x_at)
    return inside


def draw(scene: Scene) -> np.ndarray:
    """Rasterise a scene to uint8 (F, S, S, 3), anti-aliased by supersampling with a box filter."""
    S, F, n = scene.size, scene.frames, SUPERSAMPLE
    bg = np.array(BACKGROUND, dtype=np.float32)
    static = all(np.ptp(a) == 0 for o in scene.objects for a in (o.cx, o.cy, o.s, o.angle))
    out = np.empty((F, S, S, 3), dtype=np.uint8)
    offsets = (np.arange(n) + 0.5) / n
    for t in range(1 if static else F):
        img = np.broadcast_to(bg, (S, S, 3)).copy()
        for o in scene.objects:
            x0, y0, x1, y1 = o.box(t)
            j0, i0 = max(int(x0), 0), max(int(y0), 0)
            j1, i1 = min(int(math.ceil(x1)), S), min(int(math.ceil(y1)), S)
            px = (np.arange(j0, j1)[:, None] + offsets).reshape(-1)
            py = (np.arange(i0, i1)[:, None] + offsets).reshape(-1)
            inside = _inside(o.outline(t), o.cx[t], o.cy[t], o.s[t], px[None, :], py[:, None])
            cover = inside.reshape(i1 - i0, n, j1 - j0, n).mean(axis=(1, 3), dtype=np.float32)
            # Objects never overlap, so each pixel blends the background with at most one colour.
            img[i0:i1, j0:j1] += cover[..., None] * (np.array(PALETTE[o.colour], dtype=np.float32) - bg)
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if static:
        out[1:] = out[0]
    return out


def render(spec: CaptionSpec, size: int = 64, frames: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 (F, S, S, 3) picture of `spec`; an image caption with frames > 1 repeats its picture."""
    rng = rng if rng is not None else np.random.default_rng()
    return draw(layout(spec, size, frames, rng))


def sample(
    rng: np.random.Generator, size: int = 64, frames: int = 1, video: bool = False, split: str = "all"
) -> tuple[np.ndarray, str, CaptionSpec]:
    """One (uint8 (F, S, S, 3), caption, spec) example; deterministic given the rng state.

    A caption that cannot be drawn over `frames` frames (e.g. "quickly" across 16 frames) is redrawn."""
    for _ in range(1000):
        spec = sample_caption(rng, video, split)
        try:
            return render(spec, size, frames, rng), caption_text(spec), spec
        except PlacementError:
            continue
    raise PlacementError(f"no caption fits a {size}px canvas over {frames} frames")


# ----------------------------------------------------------------------------- torch stream


class ShapesWorldStream(IterableDataset):
    """Endless stream of {"pixels": float (F, 3, S, S) in [-1, 1], "caption": str}.

    Deterministic by (seed, rank, worker id): each DataLoader worker and each distributed rank draws
    its own independent stream. With batch_size, yields {"pixels": (B, F, 3, S, S), "caption": list}.
    """

    def __init__(self, size: int = 64, frames: int = 1, video: bool = False, seed: int = 0,
                 batch_size: int | None = None, split: str = "train", rank: int = 0, image_fraction: float = 0.0,
                 per_worker: bool = True):
        super().__init__()
        self.per_worker = per_worker  # False: the seed alone fixes the stream (a caller that addresses streams)
        self.size, self.frames, self.video, self.seed = size, frames, video, seed
        self.image_fraction = image_fraction  # video streams: share of one-frame image samples (joint training)
        self.batch_size, self.split, self.rank = batch_size, split, rank

    def _example(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        video = self.video and not (self.image_fraction > 0 and rng.random() < self.image_fraction)
        pixels, caption, _ = sample(rng, self.size, self.frames if video else 1, video, self.split)
        return pixels, caption

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None and self.per_worker else 0
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, worker]))

        def to_tensor(x: np.ndarray) -> torch.Tensor:  # (..., F, S, S, 3) uint8 -> (..., F, 3, S, S) in [-1, 1]
            # numpy, not torch: small tensor ops in a loader worker pay for torch's thread pool.
            x = np.moveaxis(x, -1, -3).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
            return torch.from_numpy(np.ascontiguousarray(x))

        while True:
            if self.batch_size is None:
                pixels, caption = self._example(rng)
                yield {"pixels": to_tensor(pixels), "caption": caption}
            else:
                batch = [self._example(rng) for _ in range(self.batch_size)]
                yield {"pixels": to_tensor(np.stack([p for p, _ in batch])), "caption": [c for _, c in batch]}
