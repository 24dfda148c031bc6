"""MNIST and CIFAR-10 as tensors on the training device, and the validation split.

Where the data comes from, in order: the `root` argument, the LTH_DATA environment
variable (a relative one is taken from the project root, see `lth_lib.paths`), or
torchvision's download into ~/.cache/lth/data. A local root may hold
torchvision's layouts (`MNIST/raw/...`, `cifar-10-batches-py/...`) or, for CIFAR-10,
an ImageFolder copy `CIFAR-10-images/{train,test}/<class>/*.jpg`.

Pixels are scaled to [0, 1]; no other normalisation and no augmentation (PAPER.md
names none).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth_lib.paths import env_path
from lth_lib.seeding import generator

DATA_ENV = "LTH_DATA"
DEFAULT_ROOT = Path.home() / ".cache" / "lth" / "data"
VALIDATION_SIZE = 5000

LAYOUTS = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (torchvision's MNIST layout)",
    "cifar10": (
        "cifar-10-batches-py/ (torchvision's CIFAR10 layout) or "
        "CIFAR-10-images/{train,test}/<class>/*.jpg (ImageFolder layout)"
    ),
}


class DataNotFoundError(FileNotFoundError):
    """The data set is not where the configuration says it is."""


@dataclass(frozen=True)
class Dataset:
    """A data set held as tensors: all training examples and the test set."""

    name: str  # "mnist" or "cifar10"
    copy: str  # which copy of the data, e.g. "cifar10-jpeg-imagefolder"
    train_x: torch.Tensor  # [N, *input_shape] float32 in [0, 1]
    train_y: torch.Tensor  # [N] int64
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: str | torch.device) -> Dataset:
        """The same data on `device`."""
        move = {f: getattr(self, f).to(device) for f in ("train_x", "train_y", "test_x", "test_y")}
        return Dataset(self.name, self.copy, **move)


def data_root(root: str | Path | None = None) -> tuple[Path, bool]:
    """The data folder and whether torchvision may download into it."""
    if root is not None:
        return Path(root), False
    from_env = env_path(DATA_ENV)
    if from_env is not None:
        return from_env, False
    return DEFAULT_ROOT, True


def data_copy(name: str, root: str | Path | None = None) -> str:
    """Which copy of data set `name` `load_dataset` would read; raises if there is none."""
    base, download = data_root(root)
    if name == "mnist":
        if download or (base / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return "mnist-torchvision"
    elif name == "cifar10":
        if download or (base / "cifar-10-batches-py").is_dir():
            return "cifar10-torchvision"
        if (base / "CIFAR-10-images" / "train").is_dir():
            return "cifar10-jpeg-imagefolder"
    else:
        raise ValueError(f"unknown data set {name!r}; known data sets: cifar10, mnist")
    raise DataNotFoundError(
        f"{name} not found under {base}. Expected {LAYOUTS[name]} there. "
        f"Point {DATA_ENV} (or the `root` argument) at the folder that holds it, "
        f"or unset {DATA_ENV} to let torchvision download it into {DEFAULT_ROOT}."
    )


def load_dataset(name: str, root: str | Path | None = None, device: str | torch.device = "cpu") -> Dataset:
    """Data set `name` ("mnist" or "cifar10") as float tensors on `device`."""
    base, download = data_root(root)
    return _load_cpu(name, str(base), download, data_copy(name, root)).to(device)


@functools.lru_cache(maxsize=4)
def _load_cpu(name: str, base: str, download: bool, copy: str) -> Dataset:
    if copy == "cifar10-jpeg-imagefolder":
        train_x, train_y = _read_image_folder(Path(base) / "CIFAR-10-images" / "train")
        test_x, test_y = _read_image_folder(Path(base) / "CIFAR-10-images" / "test")
    else:
        train, test = _torchvision_splits(name, Path(base), download)
        (train_x, train_y), (test_x, test_y) = (
            (torch.as_tensor(np.asarray(d.data)), torch.as_tensor(np.asarray(d.targets))) for d in (train, test)
        )
    if name == "mnist":
        shape = lambda x: x.reshape(len(x), 784)  # noqa: E731
    else:
        shape = lambda x: x.permute(0, 3, 1, 2).contiguous()  # NHWC uint8 -> NCHW  # noqa: E731
    return Dataset(
        name,
        copy,
        shape(train_x).float().div_(255),
        train_y.long(),
        shape(test_x).float().div_(255),
        test_y.long(),
    )


def _torchvision_splits(name: str, base: Path, download: bool) -> tuple:
    """torchvision's training and test sets of `name` under `base`, downloaded if
    `download`. A failed download raises DataNotFoundError saying how to use a local copy,
    and removes the folders it made (torchvision makes them before downloading)."""
    import torchvision

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.CIFAR10
    own = [base / "MNIST" / "raw", base / "MNIST"] if name == "mnist" else []
    new_folders = [p for p in (*own, base, *base.parents) if not p.exists()]  # deepest first
    try:
        return tuple(cls(str(base), train=t, download=download) for t in (True, False))
    except (RuntimeError, OSError) as error:
        if not download:
            raise
        for folder in new_folders:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        reason = " ".join(dict.fromkeys((lines[0], lines[-1])))  # e.g. which file, and the network's answer
        raise DataNotFoundError(
            f"could not download {name} into {base} ({reason}): this machine may have no network "
            f"access to it. Point {DATA_ENV} at a folder holding a local copy (export {DATA_ENV}=/path/to/data), "
            f"laid out as {LAYOUTS[name]}."
        ) from error


def _read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of an ImageFolder tree as NHWC uint8, labels by sorted class folder."""
    from PIL import Image

    images, labels = [], []
    for label, class_dir in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for path in sorted(class_dir.iterdir()):
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
            labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def validation_split(n_train: int, seed: int, size: int = VALIDATION_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices): `size` examples held out at random by `seed`.

    The validation indices come in random order, so a prefix is a random subset.
    """
    if not 0 < size < n_train:
        raise ValueError(f"validation size must be in (0, {n_train}), got {size}")
    order = torch.randperm(n_train, generator=generator(seed, "split"))
    return order[size:].sort().values, order[:size]


def describe(data: Dataset, seed: int = 0) -> str:
    """One line: the data copy and the sizes of the training, validation and test sets."""
    train, val = validation_split(len(data.train_x), seed)
    shape = "x".join(map(str, data.train_x.shape[1:]))
    return (
        f"{data.name} ({data.copy}): {len(train):,} training / {len(val):,} validation / "
        f"{len(data.test_x):,} test examples of shape {shape}"
    )
