"""Pathfinder image generator (Linsley et al. 2018; Kim, Linsley et al. 2020), the procedure behind the
LRA Pathfinder and Path-X data, writing the original release layout.

An image holds two target paths, some distractor paths and two circular markers. A path is a chain of
short straight "paddles" (length L, thickness T) separated by gaps, grown paddle by paddle with bounded
curvature. The label says whether the two markers sit at the two ends of one path (1) or at ends of the
two different target paths (0).

The procedure, per image (as in Linsley's `snakes2.py`; differences are listed below):

1. label ~ uniform {0, 1}; the margin M ~ uniform over the resolution's margin list.
2. Two target paths start from seed paddles `seed_distance` apart: the first seed paddle lies inside the
   central square at least 2 * seed_distance from every border, the second starts seed_distance from the
   first one's tail in a uniform direction; both get a uniform orientation.
3. The two paths grow alternately to `contour_length` paddles each. Paddle k of a path runs from
   p_k + M u(theta_k) to p_k + (L + M) u(theta_k) around its pivot p_k, and p_{k+1} = p_k + (L + 2M) u(theta_k),
   so consecutive paddles are 2M apart when straight. The next direction is theta_k + j * delta, with
   delta = 2 pi / ceil(2 pi (L + M)) (one pixel of arc) and weight cos^2(continuity * j * delta) while
   continuity * |j| * delta < pi / 2, drawn among the directions whose paddle keeps clear (below). If
   either path gets stuck, both are drawn again from step 2.
4. budget // distractor_length distractor paths of distractor_length = contour_length // 3 paddles are
   grown the same way, each from a seed paddle placed uniformly where it keeps clear; a distractor that
   gets stuck is drawn again up to 4 times, then left out.
5. One marker (a disk of marker_radius) goes on the tail of the first paddle of a random target path, the
   other on the head of the last paddle of the same path (label 1) or of the other one (label 0).

"Keeps clear": a paddle's axis stays at least 2M + T from the axis of every earlier paddle but its own
predecessor (their margin-dilated footprints do not overlap), and inside the frame
[padding + M, resolution - 1 - padding - M]^2. Paths are drawn with intensity `contrast` (snake contrast x
paddle contrast of the release), markers with 1, combined by maximum, and the image is scaled so its
maximum is 255 (as the release's imsave did). Anti-aliasing is the exact box-filter coverage of
`pathfinder_draw`.

The per-resolution parameters are those the LRA authors list for pathfinder32/64/128/256 in their data
builders (lra_benchmarks/data/pathfinder.py), with snakes2_wrapper.py's defaults for the others;
difficulty sets contour_length = 6 (baseline), 9 or 14 as in snakes2_wrapper.py. (The original ran under
Python 2, where `contour_length / 3` and `budget / distractor_length` are floor divisions.)

Differences from snakes2.py, on purpose: coordinates are continuous (the original snaps to the pixel grid
and tests overlap on pixel masks); candidate directions are spaced around the current direction rather
than on a fixed grid; a paddle is drawn among the directions that keep clear instead of being drawn and
then rejected up to 3 times (the same distribution for an accepted paddle); every earlier paddle is an
obstacle (the original leaves each path's newest paddle out of its occupancy mask at times, which lets
paths touch, so a label could disagree with the picture); the second seed paddle keeps clear of the
first; seed positions are found by rejection sampling; the `stop_with_availability` early stop is unused.

Files, with b = i // batch_size:

    <root>/pathfinder{R}/curv_{baseline|contour_length_9|contour_length_14}/imgs/<b>/sample_<i>.png
        grayscale 8-bit R x R PNG
    <root>/pathfinder{R}/curv_.../metadata/<b>.npy
        plain text despite the suffix (as in the LRA release), one line per image, space separated:
        imgs/<b> sample_<i>.png <i> <label> <continuity> <contour_length> <distractor_length>
        <paddle_length> <paddle_thickness> <paddle_margin> <number of paddle contrasts>
        (the columns of snakes2.py's metadata)

Images are drawn in blocks of BLOCK images, each block from its own random stream seeded by
(seed, resolution, contour_length, block), many attempts at once (numpy arrays over attempts), so image i
depends on the seed only, not on n_images or batch_size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ssmbench.data.lra.pathfinder_draw import endpoint_distance2, render_disks, render_strokes
from ssmbench.data.lra.release import GENERATED_MARKER
from ssmbench.data.storage import atomic_directory

DIFFICULTY_DIRS = {"baseline": "curv_baseline", "9": "curv_contour_length_9", "14": "curv_contour_length_14"}
CONTOUR_LENGTHS = {"baseline": 6, "9": 9, "14": 14}

# Per resolution, from LRA's data builders (values they do not list are snakes2_wrapper.py defaults:
# padding 22, seed_distance 27, paddle_length 5, paddle contrast 1). `budget` is the distractor paddle
# budget (num_distractor_snakes = budget / distractor_length); `contrast` = snake x paddle contrast.
PUBLISHED = {
    32: dict(padding=1, margins=(1,), seed_distance=7, marker_radius=1.5, paddle_length=2, paddle_thickness=0.5,
             continuity=1.0, budget=20, contrast=2 * 0.75),
    64: dict(padding=1, margins=(1,), seed_distance=12, marker_radius=2.5, paddle_length=5, paddle_thickness=1.0,
             continuity=1.8, budget=22, contrast=0.8),
    128: dict(padding=1, margins=(2, 3), seed_distance=20, marker_radius=3.0, paddle_length=5,
              paddle_thickness=1.5, continuity=1.8, budget=35, contrast=0.9),
    256: dict(padding=22, margins=(3,), seed_distance=27, marker_radius=5.0, paddle_length=5,
              paddle_thickness=2.0, continuity=1.8, budget=30, contrast=1.0),
}
DISTRACTOR_TRIES = 5  # snakes2_wrapper.py: max_distractor_contour_retrial = 4 retries
ORIENTATION_TRIALS = 3  # snakes2.py: a seed paddle tries max_segment_trial + 1 = 3 orientations
POSITION_PROPOSALS = 32  # rejection-sampled seed positions per orientation
BLOCK = 64  # images per random stream
MAX_PAIR_ATTEMPTS = 2_000_000  # per block; reaching it means the parameters cannot fit two paths
FAR = 1e6  # coordinate of unused paddle slots: farther than any clearance from every real paddle


@dataclass(frozen=True)
class PathfinderParams:
    resolution: int
    contour_length: int
    padding: int
    margins: tuple[int, ...]
    seed_distance: float
    marker_radius: float
    paddle_length: float
    paddle_thickness: float
    continuity: float
    budget: int
    contrast: float

    @property
    def distractor_length(self) -> int:
        return self.contour_length // 3

    @property
    def n_distractors(self) -> int:
        return self.budget // self.distractor_length if self.distractor_length > 0 else 0


def pathfinder_params(resolution: int, difficulty: str) -> PathfinderParams:
    """The published parameters for `resolution` (32, 64, 128, 256) and `difficulty` (baseline, 9, 14)."""
    difficulty = str(difficulty)
    if resolution not in PUBLISHED:
        raise ValueError(f"pathfinder: resolution={resolution} is not one of {sorted(PUBLISHED)}")
    if difficulty not in CONTOUR_LENGTHS:
        raise ValueError(f"pathfinder: difficulty={difficulty!r} is not one of {list(CONTOUR_LENGTHS)}")
    return PathfinderParams(resolution=resolution, contour_length=CONTOUR_LENGTHS[difficulty], **PUBLISHED[resolution])


@dataclass
class Scene:
    """One image before rendering. paths[k]: (n_paddles, 2, 2) = [paddle, (tail, head), (y, x)], paths 0 and
    1 being the targets; markers: (2, 2) marker centres; label: 1 if both markers end the same path."""

    paths: list[np.ndarray]
    markers: np.ndarray
    label: int
    margin: int


def _unit(theta: np.ndarray) -> np.ndarray:
    """(...) -> (..., 2): the (y, x) unit vector at angle theta."""
    theta = np.asarray(theta)
    u = np.empty(theta.shape + (2,))
    u[..., 0], u[..., 1] = np.sin(theta), np.cos(theta)
    return u


class _Geometry:
    """The constants of path growth for one parameter set and margin."""

    def __init__(self, p: PathfinderParams, margin: int):
        self.p, self.margin = p, margin
        self.length = p.paddle_length
        self.step = p.paddle_length + 2 * margin
        self.clearance2 = (2 * margin + p.paddle_thickness) ** 2
        self.lo, self.hi = p.padding + margin, p.resolution - 1 - p.padding - margin
        delta = 2 * math.pi / math.ceil(2 * math.pi * (p.paddle_length + margin))
        reach = math.ceil(math.pi / (2 * p.continuity * delta)) - 1  # largest |j| with weight > 0
        self.offsets = delta * np.arange(-reach, reach + 1)
        self.weights = np.cos(p.continuity * self.offsets) ** 2
        self.centre = (max(2 * p.seed_distance, self.lo), min(p.resolution - 1 - 2 * p.seed_distance, self.hi))
        if p.paddle_length >= 2 * math.sqrt(self.clearance2):
            raise ValueError(f"pathfinder: paddles of length {p.paddle_length} must be shorter than twice the "
                             f"clearance 2 * margin + thickness = {math.sqrt(self.clearance2)}")
        if self.centre[1] < self.centre[0] or self.hi - self.lo < p.paddle_length:
            raise ValueError(f"pathfinder: resolution {p.resolution} leaves no room for the seeds of {p}")

    def inside(self, pts: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        lo = self.lo if lo is None else lo
        hi = self.hi if hi is None else hi
        return ((pts >= lo) & (pts <= hi)).all(axis=-1)


class _Canvases:
    """The paddles of S scenes (or attempts), grown in lockstep: tails, heads (S, capacity, 2) and counts n (S,).
    Unused slots sit at FAR, so they never obstruct."""

    def __init__(self, g: _Geometry, size: int, capacity: int):
        self.g = g
        self.tails = np.full((size, capacity, 2), FAR)
        self.heads = np.full((size, capacity, 2), FAR)
        self.n = np.zeros(size, dtype=np.int64)

    def clear(self, rows: np.ndarray, tails: np.ndarray, heads: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        """(r, K) bool: whether candidate paddles (r, K, 2) of scenes `rows` keep clear of their placed paddles
        except slot skip[i] of scene rows[i]."""
        ok = np.ones(tails.shape[:2], dtype=bool)
        used = int(self.n[rows].max()) if len(rows) else 0
        if used == 0:
            return ok
        obstacle_tails, obstacle_heads = self.tails[rows, :used], self.heads[rows, :used]  # (r, used, 2)
        # Paddles whose midpoints are (L + clearance) or more apart keep clear; only the rest are measured.
        mid = (tails + heads) / 2  # (r, K, 2)
        obstacle_mid = (obstacle_tails + obstacle_heads) / 2  # (r, used, 2)
        gy = mid[:, :, None, 0] - obstacle_mid[:, None, :, 0]  # (r, K, used)
        gx = mid[:, :, None, 1] - obstacle_mid[:, None, :, 1]
        near = gy * gy + gx * gx < (self.g.length + math.sqrt(self.g.clearance2)) ** 2
        if skip is not None:
            near[np.arange(len(rows)), :, skip] = False
        i, k, j = np.nonzero(near)
        # Exact for paddles shorter than twice the clearance (checked in _Geometry), so crossings need no test.
        d2 = endpoint_distance2(tails[i, k], heads[i, k], obstacle_tails[i, j], obstacle_heads[i, j])
        blocked = d2 < self.g.clearance2
        ok[i[blocked], k[blocked]] = False
        return ok

    def add(self, rows: np.ndarray, tails: np.ndarray, heads: np.ndarray) -> np.ndarray:
        """Place one paddle in each scene of `rows`; returns their slots."""
        slots = self.n[rows].copy()
        self.tails[rows, slots], self.heads[rows, slots] = tails, heads
        self.n[rows] += 1
        return slots

    def drop_from(self, rows: np.ndarray, starts: np.ndarray) -> None:
        """Remove the paddles of scenes `rows` from slot starts[i] on."""
        for i, s in zip(rows, starts):
            self.tails[i, s : self.n[i]] = FAR
            self.heads[i, s : self.n[i]] = FAR
            self.n[i] = s


@dataclass
class _Ends:
    """The growing end of one path in each of r scenes: pivot (r, 2), orientation (r,), newest paddle slot (r,)."""

    pivot: np.ndarray
    theta: np.ndarray
    slot: np.ndarray

    def take(self, keep: np.ndarray) -> "_Ends":
        return _Ends(self.pivot[keep], self.theta[keep], self.slot[keep])


def _start(c: _Canvases, rows: np.ndarray, tails: np.ndarray, theta: np.ndarray) -> _Ends:
    """Place seed paddles (tail, orientation) in scenes `rows`; the pivot sits M behind the tail."""
    u = _unit(theta)
    slots = c.add(rows, tails, tails + c.g.length * u)
    return _Ends(tails - c.g.margin * u, theta, slots)


def _seed(c: _Canvases, rows: np.ndarray, lo: float, hi: float, rng: np.random.Generator) -> tuple[np.ndarray, _Ends]:
    """A seed paddle with both ends in [lo, hi]^2 keeping clear, in each scene of `rows`: an orientation, then
    positions proposed uniformly until one fits, up to ORIENTATION_TRIALS orientations. Returns (placed (r,)
    bool, the new ends of the placed ones)."""
    r = len(rows)
    found = np.zeros(r, dtype=bool)
    tails, theta = np.zeros((r, 2)), np.zeros(r)
    for _ in range(ORIENTATION_TRIALS):
        todo = np.flatnonzero(~found)
        if len(todo) == 0:
            break
        th = rng.uniform(-math.pi, math.pi, len(todo))
        props = rng.uniform(lo, hi, (len(todo), POSITION_PROPOSALS, 2))
        heads = props + c.g.length * _unit(th)[:, None]
        ok = c.g.inside(heads, lo, hi) & c.clear(rows[todo], props, heads)
        hit = ok.any(axis=1)
        first = ok.argmax(axis=1)
        done = todo[hit]
        tails[done], theta[done] = props[hit, first[hit]], th[hit]
        found[done] = True
    placed = np.flatnonzero(found)
    return found, _start(c, rows[placed], tails[placed], theta[placed])


def _extend(c: _Canvases, rows: np.ndarray, ends: _Ends, rng: np.random.Generator) -> tuple[np.ndarray, _Ends]:
    """Grow one path by a paddle in each scene of `rows` (step 3 of the module docstring). Returns (grown (r,)
    bool, the new ends of the grown ones)."""
    g = c.g
    q = ends.pivot + g.step * _unit(ends.theta)  # (r, 2) the new pivot
    phi = ends.theta[:, None] + g.offsets  # (r, J)
    u = _unit(phi)
    tails, heads = q[:, None] + g.margin * u, q[:, None] + (g.length + g.margin) * u
    ok = g.inside(tails) & g.inside(heads)
    ok &= c.clear(rows, tails, heads, skip=ends.slot)
    w = g.weights * ok
    cumulative = w.cumsum(axis=1)
    total = cumulative[:, -1]
    target = (1.0 - rng.random(len(rows))) * total  # in (0, total]: lands on a direction of positive weight
    j = np.minimum((cumulative < target[:, None]).sum(axis=1), len(g.offsets) - 1)
    grown = total > 0
    idx = np.flatnonzero(grown)
    pick = j[idx]
    slots = c.add(rows[idx], tails[idx, pick], heads[idx, pick])
    return grown, _Ends(q[idx], phi[idx, pick], slots)


def _target_pairs(g: _Geometry, needed: int, rng: np.random.Generator) -> np.ndarray:
    """(needed, 2 * contour_length, 2, 2): `needed` pairs of target paths (slot 2k + s = paddle k of path s;
    [tail, head]; (y, x)), the first successes of independent attempts in attempt order."""
    p = g.p
    found: list[np.ndarray] = []
    attempts = 0
    while len(found) < needed:
        size = int(min(4096, max(64, 16 * (needed - len(found)))))
        attempts += size
        if attempts > MAX_PAIR_ATTEMPTS:
            raise RuntimeError(f"pathfinder: no two target paths fit in {MAX_PAIR_ATTEMPTS} attempts with {p}")
        c = _Canvases(g, size, 2 * p.contour_length)
        rows = np.arange(size)
        ok, first = _seed(c, rows, *g.centre, rng)
        rows = rows[ok]
        # The second seed: seed_distance from the first tail, uniform direction and orientation.
        tails1 = first.pivot + g.margin * _unit(first.theta)
        alive = np.zeros(len(rows), dtype=bool)
        tails2, theta2 = np.zeros((len(rows), 2)), np.zeros(len(rows))
        for _ in range(ORIENTATION_TRIALS):
            todo = np.flatnonzero(~alive)
            if len(todo) == 0:
                break
            t2 = tails1[todo] + p.seed_distance * _unit(rng.uniform(-math.pi, math.pi, len(todo)))
            th = rng.uniform(-math.pi, math.pi, len(todo))
            h2 = t2 + g.length * _unit(th)
            fits = (g.inside(t2) & g.inside(h2) & c.clear(rows[todo], t2[:, None], h2[:, None])[:, 0])
            tails2[todo[fits]], theta2[todo[fits]] = t2[fits], th[fits]
            alive[todo[fits]] = True
        ends = [first.take(alive), None]
        rows = rows[alive]
        ends[1] = _start(c, rows, tails2[alive], theta2[alive])
        for _ in range(p.contour_length - 1):
            for s in range(2):
                grown, new = _extend(c, rows, ends[s], rng)
                rows = rows[grown]
                ends[s], ends[1 - s] = new, ends[1 - s].take(grown)
        found.extend(np.stack([c.tails[rows], c.heads[rows]], axis=2))
    return np.stack(found[:needed])


def _scenes(g: _Geometry, labels: np.ndarray, origins: np.ndarray, rng: np.random.Generator) -> list[Scene]:
    """Scenes of one margin: target pairs, then distractors grown in lockstep over the scenes, then markers."""
    p = g.p
    size, cl, dl = len(labels), p.contour_length, p.distractor_length
    pairs = _target_pairs(g, size, rng)
    c = _Canvases(g, size, 2 * cl + p.n_distractors * dl)
    c.tails[:, : 2 * cl], c.heads[:, : 2 * cl] = pairs[:, :, 0], pairs[:, :, 1]
    c.n[:] = 2 * cl
    distractors: list[list[int]] = [[] for _ in range(size)]  # first slot of each distractor of each scene
    for _ in range(p.n_distractors):
        pending = np.arange(size)
        for _ in range(DISTRACTOR_TRIES):
            if len(pending) == 0:
                break
            starts = c.n[pending].copy()
            ok, ends = _seed(c, pending, g.lo, g.hi, rng)
            rows = pending[ok]
            for _ in range(dl - 1):
                grown, ends = _extend(c, rows, ends, rng)
                rows = rows[grown]
            done = np.isin(pending, rows)
            for i, s in zip(pending[done], starts[done]):
                distractors[i].append(int(s))
            c.drop_from(pending[~done], starts[~done])
            pending = pending[~done]
    scenes = []
    for i in range(size):
        segments = np.stack([c.tails[i], c.heads[i]], axis=1)  # (capacity, 2, 2)
        paths = [segments[s : 2 * cl : 2] for s in range(2)] + [segments[s : s + dl] for s in distractors[i]]
        origin = int(origins[i])
        terminal = origin if labels[i] == 1 else 1 - origin
        markers = np.stack([paths[origin][0, 0], paths[terminal][-1, 1]])
        scenes.append(Scene(paths=paths, markers=markers, label=int(labels[i]), margin=g.margin))
    return scenes


def block_scenes(p: PathfinderParams, seed: int, block: int) -> list[Scene]:
    """The BLOCK scenes of images block * BLOCK .. (block + 1) * BLOCK - 1, from the block's own random stream."""
    rng = np.random.default_rng([seed, p.resolution, p.contour_length, block])
    labels = rng.integers(0, 2, BLOCK)
    margins = np.asarray(p.margins)[rng.integers(0, len(p.margins), BLOCK)]
    origins = rng.integers(0, 2, BLOCK)
    scenes: list[Scene | None] = [None] * BLOCK
    for margin in p.margins:
        idx = np.flatnonzero(margins == margin)
        if len(idx):
            for i, scene in zip(idx, _scenes(_Geometry(p, int(margin)), labels[idx], origins[idx], rng)):
                scenes[i] = scene
    return scenes


def iter_scenes(p: PathfinderParams, seed: int, n_images: int) -> Iterator[tuple[int, Scene]]:
    """(i, scene of image i) for i = 0 .. n_images - 1."""
    for block in range((n_images + BLOCK - 1) // BLOCK):
        for k, scene in enumerate(block_scenes(p, seed, block)):
            i = block * BLOCK + k
            if i >= n_images:
                return
            yield i, scene


def render_scene(scene: Scene, p: PathfinderParams) -> np.ndarray:
    """(R, R) uint8: paths at intensity `contrast`, markers at 1, combined by maximum, scaled to a maximum of 255."""
    shape = (p.resolution, p.resolution)
    paddles = np.concatenate(scene.paths)
    image = np.maximum(
        render_strokes(shape, paddles[:, 0], paddles[:, 1], p.paddle_thickness / 2, p.contrast),
        render_disks(shape, scene.markers, p.marker_radius),
    )
    return np.round(image * (255.0 / image.max())).astype(np.uint8)


def metadata_line(p: PathfinderParams, index: int, batch_size: int, scene: Scene) -> str:
    """The metadata line of image `index` (columns in the module docstring)."""
    return (f"imgs/{index // batch_size} sample_{index}.png {index} {scene.label} {float(p.continuity)} "
            f"{p.contour_length} {p.distractor_length} {p.paddle_length} {float(p.paddle_thickness)} "
            f"{scene.margin} 1")


def generate_pathfinder(root: Path, resolution: int = 32, difficulty: str = "14", n_images: int = 200, seed: int = 0,
                        batch_size: int = 1000, progress: bool = True, marker: dict | None = None) -> Path:
    """Write n_images Pathfinder images of `resolution` and `difficulty` (baseline, 9, 14) in the release layout
    under root (see the module docstring), and `marker` (if given) beside them as GENERATED_MARKER (JSON);
    returns <root>/pathfinder{resolution}/curv_<difficulty>.

    Everything is written into a temporary sibling directory that takes the place of that directory (replacing
    an earlier one) only when complete (`atomic_directory`), so an interrupted or concurrent run never leaves
    a half-written directory, nor one mixing two runs' files; on failure the temporary directory is removed.
    """
    p = pathfinder_params(resolution, difficulty)
    if n_images < 1 or batch_size < 1:
        raise ValueError(f"pathfinder: n_images={n_images} and batch_size={batch_size} must be at least 1")
    if seed < 0:
        raise ValueError(f"pathfinder: seed={seed} must be non-negative")
    out = Path(root) / f"pathfinder{resolution}" / DIFFICULTY_DIRS[str(difficulty)]
    with atomic_directory(out) as tmp:
        _write_images(tmp, p, n_images, seed, batch_size, progress, f"pathfinder{resolution}/{out.name}")
        if marker is not None:
            (tmp / GENERATED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out


def _write_images(out: Path, p: PathfinderParams, n_images: int, seed: int, batch_size: int, progress: bool,
                  description: str) -> None:
    """The imgs/<b>/sample_<i>.png and metadata/<b>.npy files of n_images images into the empty directory `out`."""
    from PIL import Image

    (out / "metadata").mkdir()
    bar = task = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task(description, total=n_images)
    lines: list[str] = []
    try:
        for i, scene in iter_scenes(p, seed, n_images):
            b = i // batch_size
            img_dir = out / "imgs" / str(b)
            if i % batch_size == 0:
                img_dir.mkdir(parents=True)
            Image.fromarray(render_scene(scene, p)).save(img_dir / f"sample_{i}.png")
            lines.append(metadata_line(p, i, batch_size, scene))
            if i % batch_size == batch_size - 1 or i == n_images - 1:
                (out / "metadata" / f"{b}.npy").write_text("\n".join(lines) + "\n", encoding="utf-8")
                lines = []
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
