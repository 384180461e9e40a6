"""Drawing primitives of the Pathfinder generator: distances between points and line segments, and
anti-aliased rendering of paddles (thick segments) and marker disks.

Coordinates are (y, x) in pixels; pixel (i, j) is the unit square centred at (i, j). Anti-aliasing is a
box filter over the pixel across the stroke: a stroke of half-width h whose axis passes at distance d
from a pixel centre covers

    coverage(d) = clip(min(d + 1/2, h) - max(d - 1/2, -h), 0, 1)

of it (exact for a long straight stroke); a disk of radius r covers clip(r + 1/2 - d, 0, 1) of a pixel
whose centre is d from the disk's centre.
"""

from __future__ import annotations

import numpy as np


def point_segment_distance2(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|p - q|^2 for q the point of segment [a, b] nearest p: q = a + t (b - a), t = clip((p - a).(b - a) / |b - a|^2, 0, 1).

    p, a, b: (..., 2), broadcast together -> (...). A segment with a == b is the point a.
    """
    dy, dx = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    py, px = p[..., 0] - a[..., 0], p[..., 1] - a[..., 1]
    length2 = dy * dy + dx * dx
    t = np.minimum(np.maximum((py * dy + px * dx) / np.where(length2 > 0, length2, 1.0), 0.0), 1.0)
    ey, ex = py - t * dy, px - t * dx
    return ey * ey + ex * ex


def _cross(o: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """z-component of (p - o) x (q - o); (..., 2) -> (...)."""
    return (p[..., 0] - o[..., 0]) * (q[..., 1] - o[..., 1]) - (p[..., 1] - o[..., 1]) * (q[..., 0] - o[..., 0])


def segment_distance2(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Squared minimum distance between segments [a1, b1] and [a2, b2]; (..., 2) broadcast together -> (...).

    Zero where the segments cross; otherwise the smallest of the four endpoint-to-segment distances (the
    nearest points of two disjoint segments in the plane include an endpoint of one of them).
    """
    d2 = endpoint_distance2(a1, b1, a2, b2)
    # Proper crossing: each segment's end points lie strictly on opposite sides of the other's line.
    crossing = (_cross(a1, b1, a2) * _cross(a1, b1, b2) < 0) & (_cross(a2, b2, a1) * _cross(a2, b2, b1) < 0)
    return np.where(crossing, 0.0, d2)


def endpoint_distance2(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """The smallest squared distance from an end point of either segment to the other segment; (..., 2) -> (...).

    It equals segment_distance2 unless the segments cross; if they do, an end point of each lies within half
    its length of the crossing, so `endpoint_distance2 >= c^2` decides `segment_distance2 >= c^2` exactly for
    segments no longer than 2c.
    """
    return np.minimum(
        np.minimum(point_segment_distance2(a1, a2, b2), point_segment_distance2(b1, a2, b2)),
        np.minimum(point_segment_distance2(a2, a1, b1), point_segment_distance2(b2, a1, b1)),
    )


def pixel_centres(height: int, width: int) -> np.ndarray:
    """(height, width, 2): the (y, x) centre of every pixel."""
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return np.stack([ys, xs], axis=-1)


def stroke_coverage(d: np.ndarray, half_width: float) -> np.ndarray:
    """Fraction of a unit pixel covered by a stroke of half-width h whose axis is d from the pixel centre."""
    return np.clip(np.minimum(d + 0.5, half_width) - np.maximum(d - 0.5, -half_width), 0.0, 1.0)


def render_strokes(shape: tuple[int, int], a: np.ndarray, b: np.ndarray, half_width: float,
                   intensity: float = 1.0) -> np.ndarray:
    """Anti-aliased image of the segments [a_k, b_k] drawn with half-width `half_width`, combined by maximum.

    a, b: (n, 2) -> (H, W) float64 = intensity * coverage(min_k distance(pixel, segment k)).
    Each segment is evaluated on a window of pixels around it (its bounding box grown by half_width + 1).
    """
    height, width = shape
    image = np.zeros(shape)
    if len(a) == 0:
        return image
    reach = half_width + 1.0
    lo = np.floor(np.minimum(a, b) - reach).astype(int)
    hi = np.ceil(np.maximum(a, b) + reach).astype(int)
    # One window size for all segments, so every segment's distances come from one array operation.
    size = (hi - lo).max(axis=0) + 1
    lo = np.clip(lo, 0, [height - 1, width - 1])
    points = lo[:, None, None, :] + pixel_centres(int(size[0]), int(size[1]))[None]  # (n, sy, sx, 2)
    d = np.sqrt(point_segment_distance2(points, a[:, None, None, :], b[:, None, None, :]))
    cover = intensity * stroke_coverage(d, half_width)
    ys, xs = points[..., 0].astype(int), points[..., 1].astype(int)
    inside = (ys < height) & (xs < width)
    np.maximum.at(image, (ys[inside], xs[inside]), cover[inside])
    return image


def render_disks(shape: tuple[int, int], centres: np.ndarray, radius: float, intensity: float = 1.0) -> np.ndarray:
    """Anti-aliased image of disks of `radius` at `centres` (n, 2), combined by maximum -> (H, W) float64."""
    grid = pixel_centres(*shape)
    d = np.sqrt(((grid[None] - centres[:, None, None, :]) ** 2).sum(-1)).min(axis=0)
    return intensity * np.clip(radius + 0.5 - d, 0.0, 1.0)
