"""The shared data machinery: the tensor cache, fixed-seed splits, ragged token storage."""

import os
from pathlib import Path

import pytest
import torch

from ssmbench.data.base import IGNORE_INDEX, check_labels
from ssmbench.data.sequences import PixelSequences, TokenSequences, ragged, take
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import (TensorCache, atomic_directory, atomic_path, corrupt_file, fingerprint, human_size,
                                   missing_data)
from ssmbench.errors import TaskDataError
from tests.task_fixtures import write_imdb


def test_split_indices_partition_with_the_requested_sizes_and_fixed_seed():
    train, val, test = split_indices(101, (0.1, 0.2), seed=5)
    assert (len(train), len(val), len(test)) == (71, 10, 20)
    assert torch.equal(torch.cat([train, val, test]).sort().values, torch.arange(101))
    again = split_indices(101, (0.1, 0.2), seed=5)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again))
    assert not torch.equal(split_indices(101, (0.1, 0.2), seed=6)[1], val)
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_indices(10, (0.5, 0.5), seed=0)


def test_cache_is_keyed_by_settings_and_rebuilds_what_it_cannot_trust(tmp_path):
    a = TensorCache(tmp_path, "mnist", {"grayscale": False, "files": [["x", 1, 2]]})
    b = TensorCache(tmp_path, "mnist", {"grayscale": True, "files": [["x", 1, 2]]})
    c = TensorCache(tmp_path, "mnist", {"grayscale": False, "files": [["x", 1, 3]]})
    assert len({a.path, b.path, c.path}) == 3
    assert a.path.parent == tmp_path / "cache" and a.path.name.startswith("mnist-")

    calls = []

    def build():
        calls.append(1)
        return {"t": torch.arange(5)}

    assert torch.equal(a.get(build)["t"], torch.arange(5)) and calls == [1]
    assert torch.equal(TensorCache(tmp_path, "mnist", a.key | {}).get(build)["t"], torch.arange(5))
    assert calls == [1]  # second use: read from disk

    a.path.write_bytes(a.path.read_bytes()[:20])  # truncated cache file
    assert a.load() is None
    assert torch.equal(a.get(build)["t"], torch.arange(5)) and calls == [1, 1]

    torch.save({"key": {"other": 1}, "tensors": {"t": torch.zeros(5)}}, a.path)  # a file written for other settings
    assert a.load() is None
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_fingerprint_changes_when_a_source_file_changes(tmp_path):
    f = tmp_path / "d" / "train.tsv"
    f.parent.mkdir()
    f.write_text("abc")
    before = fingerprint([f], tmp_path)
    assert before == [["d/train.tsv", 3, f.stat().st_mtime_ns]]
    f.write_text("abcd")
    os.utime(f, ns=(before[0][2] + 10**9, before[0][2] + 10**9))
    assert fingerprint([f], tmp_path) != before


def test_error_messages_are_one_line_and_name_what_to_do(tmp_path):
    e = missing_data("listops", [tmp_path / "a.tsv", tmp_path / "b.tsv"], "run `ssmbench data generate listops`")
    assert isinstance(e, TaskDataError) and "\n" not in str(e)
    assert str(e) == f"task listops: data not found (looked for {tmp_path}/a.tsv, {tmp_path}/b.tsv); " \
                     "run `ssmbench data generate listops`"
    assert str(corrupt_file(tmp_path / "x.png", "is empty")).startswith(f"{tmp_path}/x.png: is empty; delete it")
    assert human_size(512) == "512 B" and human_size(3 * 1024**2) == "3.0 MB"


def test_ragged_take_and_token_sequences_pad_with_lengths():
    docs = [b"ab", b"", b"xyz"]
    tokens, offsets = ragged(docs, torch.uint8)
    assert tokens.tolist() == list(b"abxyz") and offsets.tolist() == [0, 2, 2, 5]
    sub_tokens, sub_offsets = take(tokens, offsets, torch.tensor([2, 0]))
    assert sub_tokens.tolist() == list(b"xyzab") and sub_offsets.tolist() == [0, 3, 5]

    single = TokenSequences([(tokens, offsets)], torch.tensor([0, 1, 0]), seq_len=4, shift=1)
    x, y, n = single[2]
    assert x.tolist() == [ord("x") + 1, ord("y") + 1, ord("z") + 1, 0] and x.dtype == torch.long
    assert int(n) == 3 and int(y) == 0
    assert single[1][0].tolist() == [0, 0, 0, 0] and int(single[1][2]) == 0

    ids, id_offsets = ragged([[3, 4], [5]], torch.uint8)
    paired = TokenSequences([(tokens[:3], offsets[:3]), (ids, id_offsets)], torch.tensor([1, 0]), seq_len=3)
    x, y, n = paired[0]
    assert x.tolist() == [[ord("a"), ord("b"), 0], [3, 4, 0]] and n.tolist() == [2, 2] and int(y) == 1
    with pytest.raises(ValueError, match="longer than seq_len=2"):
        TokenSequences([(tokens, offsets)], torch.tensor([0, 1, 0]), seq_len=2)


def test_pixel_sequences_normalize_and_permute():
    pixels = torch.tensor([[[0], [255], [51]]], dtype=torch.uint8)
    ds = PixelSequences(pixels, torch.tensor([3]), mean=[0.2], std=[0.5], permutation=torch.tensor([2, 0, 1]))
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 1) and int(y) == 3
    assert torch.allclose(x[:, 0], torch.tensor([(0.2 - 0.2) / 0.5, (0 - 0.2) / 0.5, (1 - 0.2) / 0.5]))
    two = torch.stack([pixels[0], 255 - pixels[0]])
    second = PixelSequences(two, torch.tensor([3, 4]), mean=[0.0], std=[1.0], index=torch.tensor([1]))
    assert len(second) == 1 and int(second[0][1]) == 4 and second.labels.tolist() == [4]
    assert torch.allclose(second[0][0][:, 0], torch.tensor([1.0, 0.0, 204 / 255]))
    with pytest.raises(ValueError, match="one value per channel"):
        PixelSequences(pixels, torch.tensor([3]), mean=[0.1, 0.2], std=[1.0, 1.0])


def test_labels_must_lie_in_zero_to_n_classes():
    check_labels(torch.tensor([0, 9, IGNORE_INDEX]), 10, "task t, train split")
    for bad, found in ((10, "0..10"), (-1, "-1..9")):
        with pytest.raises(TaskDataError, match=f"task t, train split: labels outside \\[0, 10\\) \\(found {found}; "
                                                f"example 2 has {bad}\\); the task's n_classes does not match"):
            check_labels(torch.tensor([0, 9, bad]), 10, "task t, train split")


def test_a_label_outside_names_its_example_and_where_it_was_read_from():
    tokens = torch.tensor([[0, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX], [1, 7]])  # (N, L) token labels
    with pytest.raises(TaskDataError) as e:
        check_labels(tokens, 5, "task t, val split", origin=lambda i: f"row {10 + i} of train.parquet")
    assert str(e.value) == ("task t, val split: labels outside [0, 5) (found 0..7); example 2 has label 7, read from "
                            "row 12 of train.parquet; fix or replace that file, or set task.n_classes to match it")
    check_labels(tokens, 8, "task t, val split", origin=lambda i: 1 / 0)  # asked only when a label is outside


def test_cache_and_marker_writes_are_atomic_and_leave_no_temporary_file(tmp_path, monkeypatch):
    cache = TensorCache(tmp_path, "mnist", {"grayscale": False})
    cache.save({"t": torch.arange(3)})
    before = cache.path.read_bytes()

    def disk_full(obj, f):
        Path(f).write_bytes(b"half a cache")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        cache.save({"t": torch.arange(5)})
    assert cache.path.read_bytes() == before and os.listdir(cache.path.parent) == [cache.path.name]

    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("complete")
        assert not target.exists() and tmp.parent == tmp_path
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("part")
        raise RuntimeError("killed")
    assert target.read_text() == "complete" and sorted(os.listdir(tmp_path)) == ["cache", "out.txt"]


def test_atomic_directory_replaces_the_whole_directory_only_when_complete(tmp_path):
    out = tmp_path / "pathfinder32" / "curv_baseline"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("first")
        (tmp / "b.txt").write_text("first")
        assert not out.exists()
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("second, interrupted")
        raise RuntimeError("killed")
    assert {f.name: f.read_text() for f in out.iterdir()} == {"a.txt": "first", "b.txt": "first"}
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("third")
    assert {f.name: f.read_text() for f in out.iterdir()} == {"a.txt": "third"}  # no file of an earlier run
    assert os.listdir(out.parent) == ["curv_baseline"]


def test_parquet_text_that_is_not_utf8_is_a_corrupt_file(tmp_path):
    """Parquet does not check a string column's bytes on reading; the values would fail only when converted
    (a UnicodeDecodeError traceback from LRA Text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssmbench.data.lra.text import IMDB, TextDataModule

    write_imdb(tmp_path)
    path = IMDB.split_files(tmp_path, "train")[0]
    table = pq.read_table(path)
    data, offsets = b"fine" + b"caf\xe9", pa.array([0, 4, 8], type=pa.int32()).buffers()[1]
    texts = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(data)])  # row 1: latin-1, not UTF-8
    pq.write_table(pa.table({"text": texts, "label": table.column("label")[:2]}), path)
    dm = TextDataModule(name="text", vocab_size=257, n_classes=2, seq_len=64, data_dir=tmp_path, download=False)
    with pytest.raises(TaskDataError, match=f"{path}: column 'text' holds invalid values \\(.*UTF8"):
        dm.prepare_data()
