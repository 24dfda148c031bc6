import numpy as np
import pytest
import torch
from PIL import Image

from lth_lib.data import DATA_ENV, DataNotFoundError, data_copy, data_root, load_dataset, validation_split
from lth_lib.notebook import NotebookParameters
from lth_lib.paths import PROJECT
from lth_lib.store import RESULTS_ENV, results_root


def test_missing_data_names_the_variable_and_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataNotFoundError, match=rf"mnist not found under {tmp_path}.*MNIST/raw.*{DATA_ENV}"):
        load_dataset("mnist")
    with pytest.raises(DataNotFoundError, match="CIFAR-10-images"):
        data_copy("cifar10")
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        data_copy("svhn")


def test_mnist_as_tensors(mnist):
    assert mnist.copy == "mnist-torchvision"
    assert mnist.train_x.shape == (60_000, 784) and mnist.test_x.shape == (10_000, 784)
    assert mnist.train_x.dtype == torch.float32 and 0 <= mnist.train_x.min() and mnist.train_x.max() == 1
    assert torch.bincount(mnist.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_validation_split_is_5000_held_out_by_seed():
    train, val = validation_split(60_000, seed=0)
    assert len(train) == 55_000 and len(val) == 5_000
    assert len(set(train.tolist()) | set(val.tolist())) == 60_000
    assert torch.equal(validation_split(60_000, seed=0)[1], val)
    assert not torch.equal(validation_split(60_000, seed=1)[1], val)


def test_cifar_image_folder_copy(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("bird", "airplane"):
            folder = tmp_path / "CIFAR-10-images" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    folder / f"{i:04d}.png"
                )
    data = load_dataset("cifar10", tmp_path)
    assert data.copy == "cifar10-jpeg-imagefolder"
    assert data.train_x.shape == (6, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1]  # airplane before bird, as sorted
    pixel = np.asarray(Image.open(tmp_path / "CIFAR-10-images/train/bird/0001.png"))[5, 7]
    assert torch.allclose(data.train_x[4, :, 5, 7], torch.tensor(pixel / 255, dtype=torch.float32))


def test_a_relative_data_or_results_variable_means_the_same_folder_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, "../shared/data")
    monkeypatch.setenv(RESULTS_ENV, "results-elsewhere")
    for folder in (PROJECT, PROJECT / "notebooks", tmp_path):
        monkeypatch.chdir(folder)
        assert data_root() == (PROJECT / "../shared/data", False)
        assert results_root() == PROJECT / "results-elsewhere"
        assert NotebookParameters(data_root="data", results_root="/abs").data_root == str(PROJECT / "data")
        assert NotebookParameters(data_root="data", results_root="/abs").results_root == "/abs"


def test_a_failed_download_says_how_to_use_a_local_copy_and_leaves_no_empty_folders(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    cache = tmp_path / "home" / ".cache" / "lth" / "data"
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setattr("lth_lib.data.DEFAULT_ROOT", cache)
    unreachable = "http://127.0.0.1:9/"  # the discard port: refused at once, as offline
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [unreachable])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", unreachable + "cifar-10-python.tar.gz")
    for name, layout in (("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")):
        with pytest.raises(
            DataNotFoundError, match=rf"could not download {name} .*no network access.*{DATA_ENV}.*{layout}"
        ):
            load_dataset(name)
        assert not (tmp_path / "home").exists()


def test_decoded_images_are_kept_once_and_a_corrupted_copy_is_decoded_again(tmp_path, monkeypatch):
    import io

    from lth_lib import data

    monkeypatch.setattr(data, "DECODED", tmp_path / "decoded")
    files = {}
    for i, label in enumerate(("cat", "dog", "cat")):
        buffer = io.BytesIO()
        Image.fromarray(np.full((4, 4, 3), 40 * i, dtype=np.uint8)).save(buffer, format="JPEG")
        files[f"CIFAR-10-images/train/{label}/{i}.jpg"] = buffer.getvalue()
    first = data._decode_images(files, "CIFAR-10-images/train/")
    [cached] = (tmp_path / "decoded").iterdir()
    again = data._decode_images(files, "CIFAR-10-images/train/")
    assert torch.equal(first[0], again[0]) and first[1].tolist() == again[1].tolist() == [0, 0, 1]
    with np.load(cached) as arrays:  # a cached copy whose images were changed is not served
        images = arrays["images"].copy()
        images[0, 0, 0, 0] ^= 0xFF
        np.savez(cached, images=images, labels=arrays["labels"], sha256=arrays["sha256"])
    assert torch.equal(data._decode_images(files, "CIFAR-10-images/train/")[0], first[0])
    cached.write_bytes(cached.read_bytes()[:100])  # truncated
    assert torch.equal(data._decode_images(files, "CIFAR-10-images/train/")[0], first[0])
    files["CIFAR-10-images/train/dog/1.jpg"] = files[
        "CIFAR-10-images/train/cat/0.jpg"
    ]  # other files: another key
    assert not torch.equal(data._decode_images(files, "CIFAR-10-images/train/")[0], first[0])
    assert len(list((tmp_path / "decoded").iterdir())) == 2
