"""Small data files, in each task's real format, for the tasks that read files (no network in tests).

`FIXTURES[task_name](data_dir)` writes the files the task's datamodule looks for under `data_dir` (and returns
what it wrote, for tests that check the loaders against it).
Generated tasks (copy, ...) need none. The writers here are independent of ssmbench's readers:

    mnist / cifar10 / imdb   parquet files with the Hugging Face hub's schema (an image column is a
                             struct {bytes: PNG, path}; the hub's "huggingface" schema metadata)
    listops                  lra_release/listops-1000/basic_{train,val,test}.tsv, random expressions
                             in the release's bracketing, labelled by `listops_value` below
    retrieval                lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv
    pathfinder, pathx        lra_release/pathfinder{32,128}/curv_contour_length_14/{imgs,metadata}
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Callable

import numpy as np

MNIST_SIZES = {"train": 30, "test": 10}
CIFAR_SIZES = {"train": 30, "test": 10}
IMDB_SIZES = {"train": 30, "test": 10}
LISTOPS_SIZES = {"basic_train.tsv": 24, "basic_val.tsv": 6, "basic_test.tsv": 6}
AAN_SIZES = {"new_aan_pairs.train.tsv": 16, "new_aan_pairs.eval.tsv": 4, "new_aan_pairs.test.tsv": 4}
PATHFINDER_IMAGES = 20


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_hub_parquet(path: Path, columns: dict, features: dict) -> None:
    """A parquet file like the hub's exports: the given columns plus the "huggingface" schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path)


def image_column(images: list[np.ndarray]):
    import pyarrow as pa

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.array([{"bytes": png_bytes(im), "path": None} for im in images], type=struct)


def write_image_dataset(data_dir: Path, name: str, config: str, column: str, shape: tuple[int, ...], sizes: dict,
                        seed: int) -> dict[str, tuple[np.ndarray, list[int]]]:
    """<data_dir>/<name>/<config>/<split>-00000-of-00001.parquet (the hub repository's layout) with random
    images and labels 0-9; returns {split: (images (N, *shape) uint8, labels)}."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    written = {}
    for split, n in sizes.items():
        images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
        labels = pa.array([i % 10 for i in range(n)], type=pa.int64())
        features = {column: {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": [str(d) for d in range(10)]}}
        write_hub_parquet(data_dir / name / config / f"{split}-00000-of-00001.parquet",
                          {column: image_column(images), "label": labels}, features)
        written[split] = (np.stack(images), labels.to_pylist())
    return written


def write_mnist(data_dir: Path, seed: int = 0) -> dict:
    return write_image_dataset(data_dir, "mnist", "mnist", "image", (28, 28), MNIST_SIZES, seed)


def write_cifar10(data_dir: Path) -> dict:
    return write_image_dataset(data_dir, "cifar10", "plain_text", "img", (32, 32, 3), CIFAR_SIZES, seed=1)


def random_text(rng: random.Random, n_words: int) -> str:
    words = ["the", "film", "was", "great", "awful", "plot", "actors", "é", "—", "<br />", "ok"]
    return " ".join(rng.choice(words) for _ in range(n_words))


def write_imdb(data_dir: Path) -> dict[str, tuple[list[str], list[int]]]:
    """imdb/plain_text/{train,test}-00000-of-00001.parquet: (text, label) with some reviews over 4096 bytes;
    returns {split: (texts, labels)}."""
    import pyarrow as pa

    rng = random.Random(2)
    written = {}
    for split, n in IMDB_SIZES.items():
        texts = [random_text(rng, rng.choice([5, 80, 1200])) for _ in range(n)]
        features = {"text": {"dtype": "string", "_type": "Value"},
                    "label": {"_type": "ClassLabel", "names": ["neg", "pos"]}}
        write_hub_parquet(data_dir / "imdb" / "plain_text" / f"{split}-00000-of-00001.parquet",
                          {"text": pa.array(texts), "label": pa.array([i % 2 for i in range(n)], type=pa.int64())},
                          features)
        written[split] = (texts, [i % 2 for i in range(n)])
    return written


# ListOps: expressions as nested lists [op, arg, ...], written in the release's binary bracketing.
LISTOPS_OPS = ("[MIN", "[MAX", "[MED", "[SM")


def listops_value(expr) -> int:
    if isinstance(expr, int):
        return expr
    op, args = expr[0], [listops_value(a) for a in expr[1:]]
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(np.floor(np.median(args)))
    return sum(args) % 10


def listops_text(expr) -> str:
    if isinstance(expr, int):
        return str(expr)
    op, args = expr[0], expr[1:]
    text = "( " * (len(args) + 1) + op
    for a in args:
        text += f" {listops_text(a)} )"
    return text + " ] )"


def random_listops(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.5:
        return rng.randrange(10)
    return [rng.choice(LISTOPS_OPS)] + [random_listops(rng, depth - 1) for _ in range(rng.randint(2, 5))]


def write_listops(data_dir: Path) -> dict[str, list]:
    """lra_release/listops-1000/basic_*.tsv; returns {file name: [expression, ...]}."""
    rng = random.Random(3)
    written = {}
    out = data_dir / "lra_release" / "listops-1000"
    out.mkdir(parents=True, exist_ok=True)
    for name, n in LISTOPS_SIZES.items():
        exprs = [[rng.choice(LISTOPS_OPS), random_listops(rng, 3), random_listops(rng, 3)] for _ in range(n)]
        lines = ["Source\tTarget"] + [f"{listops_text(e)}\t{listops_value(e)}" for e in exprs]
        (out / name).write_text("\r\n".join(lines) + "\r\n")  # csv.writer's line ends, as in the release
        written[name] = exprs
    return written


def write_aan(data_dir: Path) -> dict[str, list[tuple[int, str, str]]]:
    """tsv_data/new_aan_pairs.*.tsv: label, id1, id2, text1, text2; one document over 4000 bytes;
    returns {file name: [(label, text1, text2), ...]}."""
    rng = random.Random(4)
    out = data_dir / "lra_release" / "tsv_data"
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in AAN_SIZES.items():
        lines, rows = [], []
        for i in range(n):
            text1 = random_text(rng, 1500 if i == 0 else rng.randint(3, 60))
            text2 = random_text(rng, rng.randint(3, 60))
            lines.append(f"{float(i % 2)}\tP{i:02d}-1001\tP{i:02d}-2002\t{text1}\t{text2}")
            rows.append((i % 2, text1, text2))
        (out / name).write_text("\n".join(lines) + "\n")
        written[name] = rows
    return written


def write_pathfinder_release(data_dir: Path, resolution: int, n_images: int = PATHFINDER_IMAGES,
                             difficulty_dir: str = "curv_contour_length_14", per_batch: int = 8) -> list[int]:
    """lra_release/pathfinder{R}/<difficulty_dir>/{imgs/<b>/sample_<i>.png, metadata/<b>.npy}; returns the labels.
    Label-1 images carry a bright diagonal so the two classes differ."""
    rng = np.random.default_rng(resolution)
    root = data_dir / "lra_release" / f"pathfinder{resolution}" / difficulty_dir
    labels = []
    for i in range(n_images):
        b, label = i // per_batch, i % 2
        image = rng.integers(0, 40, (resolution, resolution), dtype=np.uint8)
        if label:
            np.fill_diagonal(image, 255)
        (root / "imgs" / str(b)).mkdir(parents=True, exist_ok=True)
        (root / "imgs" / str(b) / f"sample_{i}.png").write_bytes(png_bytes(image))
        (root / "metadata").mkdir(parents=True, exist_ok=True)
        with open(root / "metadata" / f"{b}.npy", "a") as f:
            f.write(f"imgs/{b} sample_{i}.png {i} {label} 0 1.8 0 0 0\n")
        labels.append(label)
    return labels


FIXTURES: dict[str, Callable[[Path], object]] = {
    "smnist": write_mnist,
    "psmnist": write_mnist,
    "scifar": write_cifar10,
    "image": write_cifar10,
    "text": write_imdb,
    "listops": write_listops,
    "retrieval": write_aan,
    "pathfinder": lambda data_dir: write_pathfinder_release(data_dir, 32),
    "pathx": lambda data_dir: write_pathfinder_release(data_dir, 128),
}
