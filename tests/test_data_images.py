"""Sequential image tasks (smnist, psmnist, scifar, image) on parquet fixtures with the hub's schema."""

import re
import struct
import zlib

import pytest
import torch

from ssmbench.data import hub
from ssmbench.data.encoding import decode_image
from ssmbench.data.images import ImageSequenceDataModule, bitreversal_permutation
from ssmbench.data.splits import split_indices
from ssmbench.data.storage import cache_files
from ssmbench.errors import TaskDataError
from tests.helpers import ready
from tests.task_fixtures import MNIST_SIZES, write_cifar10, write_mnist


def mnist_task(data_dir, **kw):
    args = dict(name="smnist", dataset="mnist", mean=[0.5], std=[0.25], d_input=1, seq_len=784, n_classes=10,
                data_dir=data_dir, download=False, batch_size=4)
    args.update(kw)
    return ImageSequenceDataModule(**args)


def cifar_task(data_dir, grayscale=False, **kw):
    args = dict(name="image" if grayscale else "scifar", dataset="cifar10", grayscale=grayscale,
                mean=[0.5] if grayscale else [0.4, 0.5, 0.6], std=[0.25] if grayscale else [0.2, 0.25, 0.3],
                d_input=1 if grayscale else 3, seq_len=1024, n_classes=10, data_dir=data_dir, download=False)
    args.update(kw)
    return ImageSequenceDataModule(**args)


def test_smnist_pixels_in_raster_order_normalized_with_a_fixed_validation_split(tmp_path):
    written = write_mnist(tmp_path)
    dm = ready(mnist_task(tmp_path))
    n_train = MNIST_SIZES["train"]
    train_idx, val_idx = split_indices(n_train, (0.1,), 42)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (n_train - 3, 3, MNIST_SIZES["test"])
    images, labels = written["train"]
    for ds, idx in ((dm.train_set, train_idx), (dm.val_set, val_idx)):
        for j in (0, len(idx) - 1):
            x, y = ds[j]
            assert x.shape == (784, 1) and x.dtype == torch.float32
            expected = (torch.from_numpy(images[idx[j]]).float().reshape(784) / 255 - 0.5) / 0.25
            assert torch.allclose(x[:, 0], expected) and int(y) == labels[idx[j]]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 784, 1) and y.shape == (4,) and y.dtype == torch.long
    assert all(0 <= int(v) < 10 for v in dm.test_set.labels)


def test_permutations_reorder_the_steps_of_every_image_the_same_way(tmp_path):
    write_mnist(tmp_path)
    plain = ready(mnist_task(tmp_path))
    shuffled = ready(mnist_task(tmp_path, name="psmnist", permutation="random"))
    again = ready(mnist_task(tmp_path, name="psmnist", permutation="random"))
    perm = shuffled.train_set.permutation
    assert torch.equal(perm.sort().values, torch.arange(784)) and not torch.equal(perm, torch.arange(784))
    assert torch.equal(perm, again.train_set.permutation)
    for i in (0, 5):
        assert torch.equal(shuffled.train_set[i][0], plain.train_set[i][0][perm])
    assert not torch.equal(ready(mnist_task(tmp_path, permutation="random", permutation_seed=1)).train_set.permutation,
                           perm)
    bitrev = ready(mnist_task(tmp_path, permutation="bitreversal"))
    assert torch.equal(bitrev.train_set[0][0], plain.train_set[0][0][bitreversal_permutation(784)])
    assert len(cache_files(tmp_path, "mnist")) == 1  # one pixel cache shared by every permutation


def test_bitreversal_permutation():
    assert bitreversal_permutation(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    p = bitreversal_permutation(784)
    assert torch.equal(p.sort().values, torch.arange(784))
    assert p[:8].tolist() == [0, 512, 256, 768, 128, 640, 384, 64]  # 896 (reversed 7) is skipped


def test_scifar_channels_and_grayscale_image(tmp_path):
    written = write_cifar10(tmp_path)
    images, labels = written["test"]
    colour = ready(cifar_task(tmp_path))
    x, y = colour.test_set[3]
    assert x.shape == (1024, 3) and int(y) == labels[3]
    rgb = torch.from_numpy(images[3]).float()  # (32, 32, 3)
    r, c = 7, 30
    expected = (rgb[r, c] / 255 - torch.tensor([0.4, 0.5, 0.6])) / torch.tensor([0.2, 0.25, 0.3])
    assert torch.allclose(x[r * 32 + c], expected)

    gray = ready(cifar_task(tmp_path, grayscale=True))
    x, _ = gray.test_set[3]
    assert x.shape == (1024, 1)
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).reshape(1024)
    assert ((x[:, 0] * 0.25 + 0.5) * 255 - luma).abs().max() <= 0.5 + 1e-3  # rounded ITU-R 601 luma
    assert len(cache_files(tmp_path, "cifar10")) == 2  # colour and grayscale are cached apart


def test_second_run_reads_the_cache_and_a_changed_source_is_reprocessed(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    first = ready(mnist_task(tmp_path))

    def no_decoding(self):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(ImageSequenceDataModule, "_decode", no_decoding)
        second = ready(mnist_task(tmp_path))
    assert torch.equal(second.train_set.pixels, first.train_set.pixels)

    write_mnist(tmp_path, seed=9)  # new source files: new key, new cache
    third = ready(mnist_task(tmp_path))
    assert not torch.equal(third.train_set.pixels, first.train_set.pixels)
    assert len(cache_files(tmp_path, "mnist")) == 2


def test_corrupt_sources_are_errors_naming_the_file(tmp_path):
    write_mnist(tmp_path)
    train_file = hub.HubDataset("ylecun/mnist", "mnist").split_files(tmp_path, "train")[0]
    data = train_file.read_bytes()
    train_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(TaskDataError, match=f"{train_file}: not a readable parquet file"):
        ready(mnist_task(tmp_path))

    import pyarrow as pa
    import pyarrow.parquet as pq

    train_file.write_bytes(data)
    table = pq.read_table(train_file)
    images = table.column("image").to_pylist()
    images[4] = {"bytes": images[4]["bytes"][:30], "path": None}  # a truncated PNG in row 4
    pq.write_table(table.set_column(0, "image", pa.array(images, type=table.schema.field("image").type)), train_file)
    with pytest.raises(TaskDataError, match=rf"{train_file} \(row 4\): not a readable image"):
        ready(mnist_task(tmp_path))

    pq.write_table(table.rename_columns(["picture", "label"]), train_file)
    with pytest.raises(TaskDataError, match="has no column \\['image'\\]"):
        ready(mnist_task(tmp_path))


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(TaskDataError) as e:
        mnist_task(tmp_path).prepare_data()
    message = str(e.value)
    assert f"looked for {tmp_path}/mnist/**/train" in message
    assert f"ssmbench data prepare smnist --data-dir {tmp_path}" in message
    assert "huggingface.co/datasets/ylecun/mnist" in message and "\n" not in message

    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'ylecun/mnist' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TaskDataError, match="downloading ylecun/mnist from the Hugging Face hub failed "
                                            r"\(ConnectionError: Couldn't reach"):
        mnist_task(tmp_path, download=True).prepare_data()


def test_download_writes_the_splits_as_parquet_that_the_loader_reads(tmp_path):
    """The download path with `datasets.load_dataset` itself, reading local parquet instead of the hub."""
    written = write_mnist(tmp_path / "hub_copy")
    files = {s: [str(f) for f in hub.HubDataset("x", "mnist").split_files(tmp_path / "hub_copy", s)]
             for s in ("train", "test")}
    hub.download(hub.HubDataset("parquet", "mnist"), tmp_path / "data", "smnist", data_files=files,
                 cache_dir=str(tmp_path / "hf_cache"))
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == ["test.parquet", "train.parquet"]
    dm = ready(mnist_task(tmp_path / "data"))
    images, labels = written["test"]
    x, y = dm.test_set[2]
    assert torch.allclose(x[:, 0], (torch.from_numpy(images[2]).float().reshape(784) / 255 - 0.5) / 0.25)
    assert int(y) == labels[2]


def test_metadata_must_match_the_dataset(tmp_path):
    with pytest.raises(ValueError, match="gives seq_len=784 steps of d_input=1"):
        mnist_task(tmp_path, seq_len=1024)
    with pytest.raises(ValueError, match="seq_len=1024 steps of d_input=3"):
        cifar_task(tmp_path, d_input=1)
    with pytest.raises(ValueError, match="permutation='reverse' is not one of"):
        mnist_task(tmp_path, permutation="reverse")


def test_a_bad_label_names_its_split_and_the_file_and_row_it_was_read_from(tmp_path):
    """Validation is held out of the train files, so a bad label in a train file may surface in the val split:
    the message says so and names the file and row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_mnist(tmp_path)
    mnist = hub.HubDataset("ylecun/mnist", "mnist")
    train_idx, val_idx = split_indices(MNIST_SIZES["train"], (0.1,), 42)
    for split, row, where in (("train", int(val_idx[1]), "val split: .*example 1 has label 12"),
                              ("train", int(train_idx[4]), "train split: .*example 4 has label 12"),
                              ("test", 7, "test split: .*example 7 has label 12")):
        write_mnist(tmp_path)
        path = mnist.split_files(tmp_path, split)[0]
        table = pq.read_table(path)
        labels = table.column("label").to_pylist()
        labels[row] = 12
        pq.write_table(table.set_column(1, "label", pa.array(labels, type=pa.int64())), path)
        with pytest.raises(TaskDataError) as e:
            ready(mnist_task(tmp_path))
        message = str(e.value)
        assert re.match(f"task smnist, {where}, read from row {row} of {path}", message), message
        assert ("held out of the train split's files" in message) == where.startswith("val")
        assert message.endswith("fix or replace that file, or set task.n_classes to match it") and "\n" not in message


def test_an_image_header_claiming_a_huge_size_is_a_corrupt_file():
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)  # 900 megapixels: PIL's decompression-bomb guard
    png = b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
                                          for t, d in ((b"IHDR", header), (b"IEND", b"")))
    with pytest.raises(TaskDataError, match="^train.parquet \\(row 3\\): not a readable image \\(DecompressionBombError"):
        decode_image(png, "L", (28, 28), "train.parquet (row 3)")


def test_a_failed_download_leaves_the_previous_file_and_no_temporary_file(tmp_path, monkeypatch):
    import datasets

    class HalfWritten:
        def to_parquet(self, path):
            with open(path, "wb") as f:
                f.write(b"PAR1 half a file")
            raise OSError(28, "No space left on device")

    out = tmp_path / "mnist"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"the previous download")
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: {"train": HalfWritten()})
    with pytest.raises(OSError, match="No space left"):
        hub.download(hub.HubDataset("ylecun/mnist", "mnist"), tmp_path, "smnist")
    assert [f.name for f in out.iterdir()] == ["train.parquet"]
    assert (out / "train.parquet").read_bytes() == b"the previous download"
