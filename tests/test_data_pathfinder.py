"""LRA Pathfinder / Path-X loader on files in the release layout (fixtures and the generator's output)."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ssmbench.data.lra.pathfinder import PathfinderDataModule
from ssmbench.data.lra.pathfinder_generator import generate_pathfinder
from ssmbench.data.splits import split_indices
from ssmbench.errors import TaskDataError
from tests.helpers import ready
from tests.task_fixtures import PATHFINDER_IMAGES, write_pathfinder_release


def pathfinder_task(data_dir, resolution=32, **kw):
    args = dict(name="pathfinder", resolution=resolution, difficulty="14", d_input=1, seq_len=resolution**2,
                n_classes=2, data_dir=data_dir, batch_size=4)
    args.update(kw)
    return ready(PathfinderDataModule(**args))


def all_examples(dm):
    return [ds[i] for ds in (dm.train_set, dm.val_set, dm.test_set) for i in range(len(ds))]


def test_images_in_raster_order_split_80_10_10_and_labels_follow_the_metadata(tmp_path):
    labels = write_pathfinder_release(tmp_path, 32)
    dm = pathfinder_task(tmp_path)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (16, 2, 2)
    examples = all_examples(dm)
    assert sorted(int(y) for _, y in examples) == sorted(labels)
    diagonal = torch.arange(32) * 33  # pixel (r, r) is step r * 32 + r
    for x, y in examples:
        assert x.shape == (1024, 1) and x.dtype == torch.float32 and -1 <= float(x.min()) <= float(x.max()) <= 1
        assert bool((x[diagonal, 0] == 1.0).all()) == (int(y) == 1)  # label-1 fixtures carry a white diagonal
    _, val_idx, _ = split_indices(PATHFINDER_IMAGES, (0.1, 0.1), 42)
    first_val = np.array(Image.open(tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14" / "imgs"
                                      / str(int(val_idx[0]) // 8) / f"sample_{int(val_idx[0])}.png"))
    assert torch.allclose(dm.val_set[0][0][:, 0], (torch.from_numpy(first_val).float().reshape(1024) / 255 - 0.5) / 0.5)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1024, 1) and y.shape == (4,)


def test_metadata_files_are_read_in_numeric_order(tmp_path):
    """Sample i is line 1 of metadata/<i>.npy: the order (0, 1, 2, ..., 10, 11, not 0, 1, 10, 11, 2, ...) fixes which
    images the fixed-seed split puts in train, validation and test."""
    write_pathfinder_release(tmp_path, 32, n_images=12, per_batch=1)
    dm = pathfinder_task(tmp_path)
    imgs = tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14" / "imgs"
    for ds, idx in zip((dm.train_set, dm.val_set, dm.test_set), split_indices(12, (0.1, 0.1), 42)):
        for j, i in enumerate(idx.tolist()):
            pixels = torch.from_numpy(np.array(Image.open(imgs / str(i) / f"sample_{i}.png"))).float().reshape(1024)
            assert torch.allclose(ds[j][0][:, 0], (pixels / 255 - 0.5) / 0.5) and int(ds[j][1]) == i % 2


def test_generated_images_load_with_their_metadata_labels(tmp_path):
    out = generate_pathfinder(tmp_path / "lra_release", resolution=32, difficulty="9", n_images=10, batch_size=4,
                              seed=1, progress=False)
    metadata = [line.split() for f in sorted((out / "metadata").glob("*.npy")) for line in f.read_text().splitlines()]
    dm = pathfinder_task(tmp_path, difficulty="9")
    assert sum(len(ds) for ds in (dm.train_set, dm.val_set, dm.test_set)) == 10
    train_idx = split_indices(10, (0.1, 0.1), 42)[0]
    assert [int(dm.train_set[j][1]) for j in range(len(train_idx))] == [int(metadata[i][3]) for i in train_idx]
    assert dm.data_status().source.startswith("LRA release")  # no marker: written by the library call, not the CLI


def test_pathx_reads_128_by_128_images_as_16384_steps(tmp_path):
    write_pathfinder_release(tmp_path, 128, n_images=10)
    dm = pathfinder_task(tmp_path, resolution=128, name="pathx")
    assert dm.train_set[0][0].shape == (16384, 1)


def test_the_release_known_empty_image_is_left_out_and_any_other_is_an_error(tmp_path):
    write_pathfinder_release(tmp_path, 32, n_images=10, difficulty_dir="curv_baseline")
    root = tmp_path / "lra_release" / "pathfinder32" / "curv_baseline"
    (root / "imgs" / "0" / "sample_172.png").write_bytes(b"")
    with open(root / "metadata" / "0.npy", "a") as f:
        f.write("imgs/0 sample_172.png 172 1 0 1.8 0 0 0\n")
    dm = pathfinder_task(tmp_path, difficulty="baseline")
    assert sum(len(ds) for ds in (dm.train_set, dm.val_set, dm.test_set)) == 10

    shutil.rmtree(tmp_path / "cache")  # the cache is keyed by the metadata files, so decode the images again
    broken = root / "imgs" / "1" / "sample_9.png"
    broken.write_bytes(broken.read_bytes()[:20])
    with pytest.raises(TaskDataError, match=f"{broken}: not a readable image"):
        pathfinder_task(tmp_path, difficulty="baseline")
    broken.unlink()
    with pytest.raises(TaskDataError, match=f"{broken}: is listed in the metadata but missing"):
        pathfinder_task(tmp_path, difficulty="baseline")


def test_bad_metadata_and_wrong_image_size_name_the_file(tmp_path):
    write_pathfinder_release(tmp_path, 32, n_images=10)
    metadata = tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14" / "metadata" / "1.npy"
    good = metadata.read_text()
    metadata.write_text(good + "imgs/1 sample_99.png 99\n")
    with pytest.raises(TaskDataError, match=f"{metadata}: line 3 is 'imgs/1 sample_99.png 99', expected"):
        pathfinder_task(tmp_path)
    metadata.write_text(good.replace(" 1 0 1.8", " 2 0 1.8", 1))  # a label other than 0 / 1 in column 4
    with pytest.raises(TaskDataError, match=f"{metadata}: line 2 is 'imgs/1 sample_9.png 9 2 0 1.8"):
        pathfinder_task(tmp_path)
    metadata.write_text(good)
    image = metadata.parent.parent / "imgs" / "1" / "sample_8.png"
    Image.fromarray(np.zeros((31, 32), dtype=np.uint8)).save(image)
    with pytest.raises(TaskDataError, match=f"{image}: image is 32x31, expected 32x32"):
        pathfinder_task(tmp_path)


def test_missing_data_names_the_generator_command_and_settings_are_checked(tmp_path):
    with pytest.raises(TaskDataError) as e:
        pathfinder_task(tmp_path, resolution=64)
    message = str(e.value)
    assert f"{tmp_path}/lra_release/pathfinder64/curv_contour_length_14/metadata/<b>.npy" in message
    assert f"ssmbench data generate pathfinder --resolution 64 --difficulty 14 --data-dir {tmp_path}" in message
    with pytest.raises(ValueError, match="resolution=64 gives seq_len=4096.*set task.seq_len=4096"):
        PathfinderDataModule(name="pathfinder", resolution=64, d_input=1, seq_len=1024, n_classes=2)
    with pytest.raises(ValueError, match="difficulty='12' is not one of"):
        PathfinderDataModule(name="pathfinder", difficulty=12, d_input=1, seq_len=1024, n_classes=2)


def test_undecodable_or_empty_metadata_names_the_file(tmp_path):
    write_pathfinder_release(tmp_path, 32, n_images=10)
    metadata = tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14" / "metadata" / "1.npy"
    good = metadata.read_bytes()
    metadata.write_bytes(good[:-4] + b"\xff\xfe\x00\x01")  # the tail of the file overwritten by binary garbage
    with pytest.raises(TaskDataError, match=f"^{metadata}: is not a text metadata file \\(invalid start byte at byte "
                                            f"{len(good) - 4}\\); delete it"):
        pathfinder_task(tmp_path)
    metadata.write_bytes(b"")  # truncated to nothing: its images would silently be left out
    with pytest.raises(TaskDataError, match=f"^{metadata}: lists no images; delete it"):
        pathfinder_task(tmp_path)
