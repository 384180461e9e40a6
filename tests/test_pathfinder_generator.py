"""Pathfinder generator: the release layout, determinism, balanced labels, labels that agree with an
independent connectivity check of the two markers, and a directory replaced only when complete."""

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmbench.data.lra.pathfinder_draw import endpoint_distance2, render_strokes, segment_distance2
from ssmbench.data.lra.pathfinder_generator import (BLOCK, block_scenes, generate_pathfinder, iter_scenes,
                                                    pathfinder_params, render_scene)


def sample_points(a, b, step=0.02):
    """Points every `step` pixels along segment [a, b] (both ends included)."""
    n = max(2, int(np.ceil(np.linalg.norm(b - a) / step)) + 1)
    return a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)


# ---------------------------------------------------------------- drawing primitives


def test_segment_distance_matches_dense_sampling():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a1, b1, a2, b2 = rng.uniform(0, 10, (4, 2))
        brute = np.sqrt(((sample_points(a1, b1)[:, None] - sample_points(a2, b2)[None]) ** 2).sum(-1)).min()
        exact = np.sqrt(segment_distance2(a1, b1, a2, b2))
        assert exact <= brute + 1e-9 and brute - exact < 0.03
        if exact > 0:  # disjoint: the endpoint distances are the distance
            assert np.isclose(np.sqrt(endpoint_distance2(a1, b1, a2, b2)), exact)


def test_stroke_coverage_is_the_pixel_area_covered():
    # A long horizontal stroke of half-width 0.3 along y = 5.2: 16x16 supersampling of each pixel's area.
    a, b = np.array([[5.2, 1.0]]), np.array([[5.2, 18.0]])
    image = render_strokes((12, 20), a, b, half_width=0.3)
    sub = (np.arange(16) + 0.5) / 16 - 0.5
    for row in range(3, 8):
        ys = row + sub
        covered = np.mean(np.abs(ys - 5.2) <= 0.3)
        assert image[row, 10] == pytest.approx(covered, abs=1 / 16)
    assert image[0, 10] == 0 and image[5, 0] == 0


# ---------------------------------------------------------------- parameters


# lra_benchmarks/data/pathfinder.py (the LRA builders' docstrings), with snakes2_wrapper.py's defaults where they
# list none (padding 22, seed_distance 27, paddle_length 5, paddle contrast 1): (padding, margins, seed_distance,
# marker_radius, paddle_length, paddle_thickness, continuity, distractor budget, snake x paddle contrast).
LRA_BUILDERS = {
    32: (1, (1,), 7, 1.5, 2, 0.5, 1.0, 20, 2 * 0.75),
    64: (1, (1,), 12, 2.5, 5, 1.0, 1.8, 22, 0.8),
    128: (1, (2, 3), 20, 3.0, 5, 1.5, 1.8, 35, 0.9),
    256: (22, (3,), 27, 5.0, 5, 2.0, 1.8, 30, 1.0),
}


@pytest.mark.parametrize("resolution", sorted(LRA_BUILDERS))
def test_parameters_are_the_lra_builders(resolution):
    for difficulty, contour_length in (("baseline", 6), ("9", 9), ("14", 14)):
        p = pathfinder_params(resolution, difficulty)
        assert (p.padding, p.margins, p.seed_distance, p.marker_radius, p.paddle_length, p.paddle_thickness,
                p.continuity, p.budget, p.contrast) == LRA_BUILDERS[resolution]
        assert (p.resolution, p.contour_length, p.distractor_length) == (resolution, contour_length, contour_length // 3)


def test_published_parameters():
    p = pathfinder_params(32, "14")
    assert (p.paddle_length, p.paddle_thickness, p.margins, p.seed_distance, p.marker_radius) == (2, 0.5, (1,), 7, 1.5)
    assert (p.contour_length, p.distractor_length, p.n_distractors, p.continuity) == (14, 4, 5, 1.0)
    assert (pathfinder_params(32, "baseline").distractor_length, pathfinder_params(32, "baseline").n_distractors) == (2, 10)
    assert pathfinder_params(128, "9").n_distractors == 35 // 3
    assert pathfinder_params(128, "14").margins == (2, 3)
    with pytest.raises(ValueError, match="resolution=48 is not one of"):
        pathfinder_params(48, "14")
    with pytest.raises(ValueError, match="difficulty='hard' is not one of"):
        pathfinder_params(32, "hard")


# ---------------------------------------------------------------- labels against connectivity


def connected(scene, scale=8):
    """Independent check: rasterize every path as one thin polyline (paddles and the gaps between consecutive
    paddles) on a grid `scale` times finer than the image, flood-fill (8-connected) from the first marker and
    report whether the fill reaches the second."""
    cells = set()
    for path in scene.paths:
        vertices = path.reshape(-1, 2)  # tail_0, head_0, tail_1, head_1, ...
        for a, b in zip(vertices[:-1], vertices[1:]):
            for y, x in np.floor(sample_points(a, b) * scale).astype(int):
                cells.add((y, x))
    start, goal = (tuple(np.floor(m * scale).astype(int)) for m in scene.markers)
    assert start in cells and goal in cells, "a marker is not on a path"
    seen, todo = {start}, deque([start])
    while todo:
        y, x = todo.popleft()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nxt = (y + dy, x + dx)
                if nxt in cells and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    return goal in seen


def min_distance_between_paths(scene):
    points = [np.concatenate([sample_points(a, b, 0.1) for a, b in path]) for path in scene.paths]
    best = np.inf
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            best = min(best, np.sqrt(((points[i][:, None] - points[j][None]) ** 2).sum(-1)).min())
    return best


@pytest.mark.parametrize("resolution, difficulty, n", [(32, "14", 12), (32, "baseline", 6), (128, "9", 4)])
def test_label_agrees_with_marker_connectivity(resolution, difficulty, n):
    p = pathfinder_params(resolution, difficulty)
    scenes = block_scenes(p, seed=5, block=0)[:n]
    assert {s.label for s in scenes} == {0, 1}
    for s in scenes:
        assert connected(s) == (s.label == 1)
        clearance = 2 * s.margin + p.paddle_thickness
        assert min_distance_between_paths(s) >= clearance - 1e-6  # distinct paths never touch
        assert [len(path) for path in s.paths[:2]] == [p.contour_length] * 2
        assert all(len(path) == p.distractor_length for path in s.paths[2:])
        lengths = np.linalg.norm(np.concatenate(s.paths)[:, 1] - np.concatenate(s.paths)[:, 0], axis=1)
        assert np.allclose(lengths, p.paddle_length)


def test_labels_are_balanced():
    p = pathfinder_params(32, "baseline")
    labels = [s.label for _, s in iter_scenes(p, seed=0, n_images=4 * BLOCK)]
    assert 0.4 < np.mean(labels) < 0.6


# ---------------------------------------------------------------- files


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_release_layout_and_determinism(tmp_path):
    out = generate_pathfinder(tmp_path / "a", resolution=32, difficulty="14", n_images=10, seed=3, batch_size=4,
                              progress=False)
    assert out == tmp_path / "a" / "pathfinder32" / "curv_contour_length_14"
    files = read_tree(out)
    assert sorted(f for f in files if f.startswith("metadata")) == ["metadata/0.npy", "metadata/1.npy", "metadata/2.npy"]
    lines = [line.split() for b in range(3) for line in files[f"metadata/{b}.npy"].decode().splitlines()]
    assert [f[:3] for f in lines] == [[f"imgs/{i // 4}", f"sample_{i}.png", str(i)] for i in range(10)]
    assert all(len(f) == 11 and f[3] in ("0", "1") for f in lines)
    assert [f[4:] for f in lines[:1]] == [["1.0", "14", "4", "2", "0.5", "1", "1"]]

    p = pathfinder_params(32, "14")
    for (i, scene), fields in zip(iter_scenes(p, seed=3, n_images=10), lines):
        image = Image.open(out / fields[0] / fields[1])
        assert image.mode == "L" and image.size == (32, 32)
        pixels = np.asarray(image)
        assert np.array_equal(pixels, render_scene(scene, p)) and int(fields[3]) == scene.label
        # The picture shows the scene: bright markers, and every paddle lit (some pixel centre lies within 1/2
        # of its axis near its midpoint, covered at least 1/4 at intensity 1.5 of the markers' 1: >= 95).
        for y, x in np.round(scene.markers).astype(int):
            assert pixels[y, x] >= 200
        for y, x in np.round(np.concatenate(scene.paths).mean(axis=1)).astype(int):
            assert pixels[y - 1 : y + 2, x - 1 : x + 2].max() >= 95

    # Same seed, same bytes; image i does not depend on n_images or batch_size; another seed differs.
    assert read_tree(generate_pathfinder(tmp_path / "b", 32, "14", 10, seed=3, batch_size=4, progress=False)) == files
    other = generate_pathfinder(tmp_path / "c", 32, "14", 6, seed=3, batch_size=100, progress=True)
    assert (other / "imgs/0/sample_5.png").read_bytes() == files["imgs/1/sample_5.png"]
    reseeded = generate_pathfinder(tmp_path / "d", 32, "14", 10, seed=4, batch_size=4, progress=False)
    assert (reseeded / "imgs/0/sample_0.png").read_bytes() != files["imgs/0/sample_0.png"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_images=0"):
        generate_pathfinder(Path("unused"), n_images=0, progress=False)
    with pytest.raises(ValueError, match="seed=-1 must be non-negative"):
        generate_pathfinder(Path("unused"), seed=-1, progress=False)
    with pytest.raises(ValueError, match="difficulty='7'"):
        generate_pathfinder(Path("unused"), difficulty="7", progress=False)


def test_regenerating_replaces_the_whole_directory(tmp_path):
    """Fewer images into a directory generated before: the result is exactly a fresh generation, with no
    image or metadata file left over from the earlier one."""
    generate_pathfinder(tmp_path / "a", 32, "baseline", 10, seed=3, batch_size=4, progress=False)
    out = generate_pathfinder(tmp_path / "a", 32, "baseline", 4, seed=5, batch_size=4, progress=False)
    assert read_tree(out) == read_tree(generate_pathfinder(tmp_path / "b", 32, "baseline", 4, seed=5, batch_size=4,
                                                           progress=False))
    assert sorted(p.name for p in out.parent.iterdir()) == ["curv_baseline"]


def test_an_interrupted_generation_leaves_the_previous_directory_untouched(tmp_path, monkeypatch):
    from ssmbench.data.lra import pathfinder_generator

    out = generate_pathfinder(tmp_path, 32, "baseline", 10, seed=3, batch_size=4, progress=False,
                              marker={"generator": "pathfinder", "seed": 3})
    before = read_tree(out)
    assert json.loads(before["GENERATED.json"]) == {"generator": "pathfinder", "seed": 3}
    rendered = []

    def killed_after_five(scene, p):
        if len(rendered) == 5:
            raise KeyboardInterrupt
        rendered.append(scene)
        return render_scene(scene, p)

    monkeypatch.setattr(pathfinder_generator, "render_scene", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        generate_pathfinder(tmp_path, 32, "baseline", 10, seed=4, batch_size=4, progress=False)
    assert read_tree(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["curv_baseline"]  # the temporary directory is gone
