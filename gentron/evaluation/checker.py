"""A Shapes World checker that needs no learned weights: detect objects, then test the caption.

`detect` turns one frame into objects (colour, shape, size, box centre, angle); `check` reads a
caption with the Shapes World grammar and says, per category in the style of T2I-CompBench, whether
the picture or video shows it. Everything relies only on what docs/shapes-world.md promises.

Shape classes come from rotation-invariant angular moments of the soft mask about its centroid,
M_n = sum(w r^2 e^{i n theta}) / sum(w r^2): a square only has |M_4|, a star |M_5|, the (near
3-fold) triangle |M_3|, a circle none. The phase of the same moment gives the angle.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..data.shapes import (BACKGROUND, DIRECTION_VECTORS, GROWTH, IMAGE_KINDS, PALETTE, SIZE_FRACTION,
                           SPEED, SPIN_DEGREES, CaptionSpec, ObjectSpec, parse_caption)

COLOUR_NAMES = tuple(PALETTE)
_BG = np.array(BACKGROUND, dtype=np.float32)
_PALETTE = np.array([PALETTE[c] for c in COLOUR_NAMES], dtype=np.float32)

FOREGROUND_DISTANCE = 70.0  # RGB distance from the background: the contract keeps it within 30
COLOUR_TOLERANCE = 100.0  # mean colour further than this from every palette colour -> colour None
MIN_AREA_FRACTION = 0.002  # blobs smaller than this share of the canvas are noise (8 px at 64)

# |M_n| for n = 2..5 of each shape drawn at high resolution (see tests/test_checker.py), and the
# phase of its dominant moment when unrotated. A circle has no moments.
SHAPE_MOMENTS: dict[str, tuple[float, float, float, float]] = {
    "circle": (0.0, 0.0, 0.0, 0.0),
    "square": (0.0, 0.0, 0.288, 0.0),
    "triangle": (0.143, 0.543, 0.008, 0.138),
    "star": (0.0, 0.0, 0.0, 0.649),
}
SYMMETRY = {"triangle": 3, "square": 4, "star": 5}
REFERENCE_PHASE = {"triangle": math.pi / 2, "square": math.pi, "star": -math.pi / 2}
CIRCLE_THRESHOLD = 0.4  # dominant moment below this share of its template -> circle
AREA_PER_EXTENT2 = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5,
                    "star": 5 * 0.5 * 0.2 * math.sin(math.radians(36))}
# s / S read as "small" (0.20) up to 0.26 and as "big" (0.36) from 0.30: 0.02 either side of the midpoint.
_MID_SIZE = (SIZE_FRACTION["small"] + SIZE_FRACTION["big"]) / 2
SMALL_MAX, BIG_MIN = _MID_SIZE - 0.02, _MID_SIZE + 0.02
# Speed (S per frame) read as each speed word: split at midpoints between the contract's speeds
# (0.03, 0.045, 0.06) so a wrong speed word fails, with loose outer bounds.
_MID_SLOW, _MID_FAST = (SPEED["slowly"] + SPEED[None]) / 2, (SPEED[None] + SPEED["quickly"]) / 2
SPEED_BANDS = {"slowly": (0.015, _MID_SLOW), None: (_MID_SLOW, _MID_FAST), "quickly": (_MID_FAST, 0.09)}


@dataclass
class Detection:
    """One object found in a frame. Positions and sizes are in pixels, angle in degrees clockwise."""

    colour: str | None  # nearest palette colour, None when nothing is close
    shape: str
    cx: float  # box centre (not the centroid: they differ for a triangle)
    cy: float
    s: float  # extent, from the area and the shape class
    angle: float  # rotation from upright, modulo the shape's symmetry; nan for a circle
    area: float  # anti-aliasing-weighted pixel count
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 of the thresholded mask (x1, y1 exclusive)
    size_word: str | None  # "small" / "big" when the extent reads as one, else None
    moments: tuple[float, float, float, float]  # |M_2| .. |M_5|


# ----------------------------------------------------------------------------- detection


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected labels (0 = background, 1..n) by min-label propagation with pointer jumping."""
    h, w = mask.shape
    flat = mask.ravel()
    big = h * w
    lab = np.where(flat, np.arange(h * w), big)
    while True:
        grid = lab.reshape(h, w)
        new = grid.copy()
        np.minimum(new[1:], grid[:-1], out=new[1:])
        np.minimum(new[:-1], grid[1:], out=new[:-1])
        np.minimum(new[:, 1:], grid[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], grid[:, 1:], out=new[:, :-1])
        new = np.where(flat, new.ravel(), big)
        fg = new < big
        new[fg] = new[new[fg]]  # jump to the label's own label: halves long chains each pass
        if np.array_equal(new, lab):
            break
        lab = new
    roots, labels = np.unique(lab, return_inverse=True)
    labels = labels + 1
    labels[lab == big] = 0
    n = len(roots) - int(roots[-1] == big) if len(roots) else 0
    return labels.reshape(h, w), n


def _moments(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Centroid and complex angular moments M_2..M_5 of weights w at points (x, y)."""
    m = w.sum()
    cx, cy = (w * x).sum() / m, (w * y).sum() / m
    dx, dy = x - cx, y - cy
    r2 = dx * dx + dy * dy
    z = (dx + 1j * dy) / np.sqrt(np.maximum(r2, 1e-12))  # e^{i theta}
    wr = w * r2
    moments = np.array([(wr * z**n).sum() for n in (2, 3, 4, 5)]) / max(wr.sum(), 1e-12)
    return cx, cy, moments


def _classify(moments: np.ndarray) -> str:
    """The shape whose dominant moment is strongest relative to its template; circle if none is."""
    mags = np.abs(moments)
    best, score = "circle", CIRCLE_THRESHOLD
    for shape, n in SYMMETRY.items():
        ratio = mags[n - 2] / SHAPE_MOMENTS[shape][n - 2]
        if ratio > score:
            best, score = shape, ratio
    return best


def _angle(shape: str, moments: np.ndarray) -> float:
    """Clockwise rotation from upright, in [0, 360 / n) (a triangle: [0, 360) using its elongation)."""
    if shape == "circle":
        return float("nan")
    n = SYMMETRY[shape]
    period = 360.0 / n
    angle = math.degrees(np.angle(moments[n - 2]) - REFERENCE_PHASE[shape]) / n % period
    if shape == "triangle":
        # M_3 gives the apex modulo 120 degrees; the long axis (M_2, upright phase pi) picks one of three.
        axis = math.degrees(np.angle(moments[0]) - math.pi) / 2
        angle = min((angle + k * period for k in range(3)), key=lambda a: abs((a - axis + 90) % 180 - 90))
    return angle % 360.0 if shape == "triangle" else angle


def _neighbours(mask: np.ndarray, op) -> np.ndarray:
    """Combine each pixel with its 4 neighbours: np.logical_and erodes, np.logical_or dilates."""
    out = mask.copy()
    op(out[1:], mask[:-1], out=out[1:])
    op(out[:-1], mask[1:], out=out[:-1])
    op(out[:, 1:], mask[:, :-1], out=out[:, 1:])
    op(out[:, :-1], mask[:, 1:], out=out[:, :-1])
    return out


def detect(frame: np.ndarray) -> list[Detection]:
    """Objects in a uint8 (H, W, 3) frame, ordered by position (top to bottom, left to right)."""
    h, w_ = frame.shape[:2]
    size = min(h, w_)
    x = frame.astype(np.float32) - _BG
    fg = np.sqrt((x * x).sum(-1)) > FOREGROUND_DISTANCE
    labels, n = connected_components(fg)
    yy, xx = np.mgrid[0:h, 0:w_].astype(np.float32) + 0.5  # pixel centres
    out = []
    for k in range(1, n + 1):
        comp = labels == k
        if comp.sum() < MIN_AREA_FRACTION * h * w_:
            continue
        # Colour from the blob's interior: anti-aliased rims and codec bleed live on its border.
        interior = _neighbours(comp, np.logical_and)
        core = x[interior] if interior.sum() >= 3 else x[comp]
        mean = core.mean(0)
        dist = np.sqrt(((_PALETTE - _BG - mean) ** 2).sum(-1))
        colour = COLOUR_NAMES[int(dist.argmin())] if dist.min() < COLOUR_TOLERANCE else None
        # Soft mask: coverage along the object's colour, on the blob plus a 1 px ring for the rim.
        ring = _neighbours(comp, np.logical_or) & ((labels == 0) | comp)
        v = (_PALETTE[COLOUR_NAMES.index(colour)] - _BG) if colour else mean
        wts = np.clip(x[ring] @ v / (v @ v), 0.0, 1.0)
        cx, cy, moments = _moments(wts, xx[ring], yy[ring])
        shape = _classify(moments)
        angle = _angle(shape, moments)
        area = float(wts.sum())
        s = math.sqrt(area / AREA_PER_EXTENT2[shape])
        if shape == "triangle":  # the box centre sits s/6 from the centroid, towards the apex
            a = math.radians(angle)
            cx, cy = cx + s / 6 * math.sin(a), cy - s / 6 * math.cos(a)
        ys, xs = np.nonzero(comp)
        frac = s / size
        word = "small" if frac <= SMALL_MAX else "big" if frac >= BIG_MIN else None
        out.append(Detection(colour, shape, float(cx), float(cy), s, angle, area,
                             (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), word,
                             tuple(float(m) for m in np.abs(moments))))
    return sorted(out, key=lambda d: (d.cy, d.cx))


# ----------------------------------------------------------------------------- matching


def matches(det: Detection, obj: ObjectSpec, size: int, use_size: bool = True) -> bool:
    """Colour and shape agree, and the size word (if the caption has one) reads right."""
    if det.colour != obj.colour or det.shape != obj.shape:
        return False
    if use_size and obj.size_word == "small":
        return det.s / size <= SMALL_MAX
    if use_size and obj.size_word == "big":
        return det.s / size >= BIG_MIN
    return True


def relation_holds(relation: str, a: Detection, b: Detection) -> bool:
    """The contract's definition on box centres: A left of B iff cx_A < cx_B and |dx| > |dy|."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if relation == "to the left of":
        return dx > 0 and abs(dx) > abs(dy)
    if relation == "to the right of":
        return dx < 0 and abs(dx) > abs(dy)
    if relation == "above":
        return dy > 0 and abs(dy) > abs(dx)
    if relation == "below":
        return dy < 0 and abs(dy) > abs(dx)
    raise ValueError(f"unknown relation {relation!r}")


def _assignments(objs: tuple[ObjectSpec, ...], dets: list[Detection], size: int, use_size: bool = True):
    """Every way to give each captioned object its own matching detection."""
    for perm in itertools.permutations(range(len(dets)), len(objs)):
        if all(matches(dets[i], o, size, use_size) for i, o in zip(perm, objs)):
            yield [dets[i] for i in perm]


def _bound(objs: tuple[ObjectSpec, ...], dets: list[Detection], key: str) -> bool:
    """Each captioned object has its own detection agreeing on ``key`` ("colour" or "shape") alone."""
    wanted = [getattr(o, key) for o in objs]
    return any(all(getattr(dets[i], key) == w for i, w in zip(perm, wanted))
               for perm in itertools.permutations(range(len(dets)), len(objs)))


# ----------------------------------------------------------------------------- images


def _check_image(spec: CaptionSpec, dets: list[Detection], size: int) -> dict:
    # colour and shape alone: T2I-CompBench's colour and shape categories, which rise before full binding does
    res = {"attribute": None, "spatial": None, "count": None, "single": None,
           "colour": _bound(spec.objects, dets, "colour"), "shape": _bound(spec.objects, dets, "shape")}
    objs = spec.objects
    if spec.kind == "single":
        res["attribute"] = any(True for _ in _assignments(objs, dets, size))
        res["single"] = res["attribute"] and len(dets) == 1
        res["correct"] = res["single"]
    elif spec.kind == "relation":
        found = list(_assignments(objs, dets, size))
        res["attribute"] = bool(found)
        res["spatial"] = len(dets) == 2 and any(relation_holds(spec.relation, a, b) for a, b in found)
        res["correct"] = res["spatial"]
    else:
        good = sum(matches(d, objs[0], size) for d in dets)
        res["attribute"] = good > 0 and good == len(dets)
        res["count"] = good == spec.count == len(dets)
        res["correct"] = res["count"]
    res["num_objects"] = len(dets)
    return res


# ----------------------------------------------------------------------------- videos


def _track(objs: tuple[ObjectSpec, ...], per_frame: list[list[Detection]], size: int) -> list[list[Detection | None]]:
    """Follow each captioned object: pick it by its attributes on frame 0, then by nearest position."""
    first = per_frame[0]

    def cost(perm):  # attribute mismatches on frame 0, colour weighing most
        return sum(4 * (first[i].colour != o.colour) + 2 * (first[i].shape != o.shape)
                   + (not matches(first[i], o, size)) for i, o in zip(perm, objs))

    perms = list(itertools.permutations(range(len(first)), min(len(objs), len(first))))
    start = [first[i] for i in min(perms, key=cost)] if perms else []
    tracks: list[list[Detection | None]] = [[d] for d in start] + [[None] for _ in range(len(objs) - len(start))]
    for dets in per_frame[1:]:
        prev = [tr[-1] for tr in tracks]

        def dist(perm):
            return sum(math.hypot(dets[i].cx - p.cx, dets[i].cy - p.cy) if p is not None else 0.0
                       for i, p in zip(perm, prev))

        k = min(len(tracks), len(dets))
        perms = list(itertools.permutations(range(len(dets)), k))
        perm = min(perms, key=dist) if perms else ()
        for j, tr in enumerate(tracks):
            tr.append(dets[perm[j]] if j < len(perm) and prev[j] is not None else None)
    return tracks


def _slope(v: np.ndarray) -> float:
    t = np.arange(len(v), dtype=np.float64)
    return float(np.polyfit(t, v, 1)[0]) if len(v) > 1 else 0.0


def _wrapped_steps(angles: np.ndarray, period: float) -> np.ndarray:
    d = np.diff(angles)
    return (d + period / 2) % period - period / 2


def velocity(track: list[Detection], size: int) -> tuple[float, float]:
    """A tracked object's (vx, vy), fractions of the side per frame, fitted over the frames."""
    return _slope(np.array([d.cx for d in track])) / size, _slope(np.array([d.cy for d in track])) / size


def along_across(v: tuple[float, float], direction: str) -> tuple[float, float]:
    """Velocity ``v``'s component along ``direction`` ("left", "up", ...) and its size across it."""
    (ux, uy), (vx, vy) = DIRECTION_VECTORS[direction], v
    return vx * ux + vy * uy, abs(vx * uy - vy * ux)


def motion_ok(motion: str, track: list[Detection], size: int) -> bool:
    """Whether a tracked object's centre, extent and angle over the frames show `motion`."""
    if len(track) < 2:
        return False
    cx = np.array([d.cx for d in track]); cy = np.array([d.cy for d in track])
    log_s = np.log([d.s for d in track])
    shape = track[0].shape
    drift = np.hypot(cx - cx[0], cy - cy[0]).max() / size
    growth = math.exp(_slope(log_s))  # extent ratio per frame
    steady = drift < 0.025
    same_size = abs(growth - 1) < 0.02
    if shape == "circle":
        steps = np.zeros(len(track) - 1)
    else:
        period = 360.0 if shape == "triangle" else 360.0 / {"square": 4, "star": 5}[shape]
        steps = _wrapped_steps(np.array([d.angle for d in track]), period)
    if motion.startswith("moving"):
        words = motion.split()
        vx, vy = velocity(track, size)
        along, across = along_across((vx, vy), words[1])
        lo, hi = SPEED_BANDS[words[2] if len(words) > 2 else None]
        t = np.arange(len(track))
        straight = np.hypot(cx - cx[0] - vx * size * t, cy - cy[0] - vy * size * t).max() / size < 0.03
        return lo <= along < hi and across < 0.01 and straight and same_size
    if motion == "spinning":
        return steady and same_size and abs(float(np.mean(steps)) - SPIN_DEGREES) < 6.0
    if motion in ("growing", "shrinking"):
        rate = growth if motion == "growing" else 1 / growth
        return steady and abs(rate - GROWTH) < 0.04
    if motion == "standing still":
        return steady and same_size and float(np.abs(steps).mean()) < 5.0
    raise ValueError(f"unknown motion {motion!r}")


def _check_video(spec: CaptionSpec, per_frame: list[list[Detection]], size: int) -> dict:
    objs = spec.objects
    tracks = _track(objs, per_frame, size)
    complete = all(d is not None for tr in tracks for d in tr)
    first_ok = complete and all(matches(tr[0], o, size) for tr, o in zip(tracks, objs))
    every = complete and all(len(dets) == len(objs) for dets in per_frame) and all(
        matches(d, o, size, use_size=False) for tr, o in zip(tracks, objs) for d in tr)
    consistent = complete and all(len({(d.colour, d.shape) for d in tr}) == 1 for tr in tracks)
    direction = complete and all(motion_ok(o.motion, tr, size) for tr, o in zip(tracks, objs))
    return {"attribute": first_ok, "objects_every_frame": every, "temporal_consistency": consistent,
            "direction": direction, "correct": first_ok and every and consistent and direction}


def dynamic_degree(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame change, in [0, 1] (0 for a still picture)."""
    if len(frames) < 2:
        return 0.0
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() / 255.0)


def check(caption: str, frames: np.ndarray) -> dict:
    """Per-category verdicts for a caption and uint8 frames (F, H, W, 3) or one (H, W, 3) image.

    Image captions give "attribute", "spatial", "count", "single" (None where the category does not
    apply) and "colour" / "shape" (each captioned object's colour, or shape, alone is there), true only
    if they hold on every frame; video captions give "attribute" (first frame),
    "objects_every_frame", "temporal_consistency", "direction". Both give "correct" for the
    caption's own category and "dynamic_degree". ValueError if the caption is outside the grammar.
    """
    spec = parse_caption(caption)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    size = min(frames.shape[1:3])
    per_frame = [detect(f) for f in frames]
    if spec.kind in IMAGE_KINDS:
        results = [_check_image(spec, dets, size) for dets in per_frame]
        res = {k: (None if results[0][k] is None else all(r[k] for r in results))
               for k in ("attribute", "spatial", "count", "single", "correct", "colour", "shape")}
        res["num_objects"] = results[0]["num_objects"]
    else:
        res = _check_video(spec, per_frame, size)
    res["kind"] = spec.kind
    res["dynamic_degree"] = dynamic_degree(frames)
    return res
