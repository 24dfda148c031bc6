"""MNIST and CIFAR-10 as tensors on the training device, and which examples training
uses when: each trial's validation split, the test examples every network is evaluated
on, and each network's data order.

Where the data comes from, in order: the `root` argument, the LTH_DATA environment
variable (a relative one is taken from the project root, see `lth_lib.paths`), or
torchvision's download into ~/.cache/lth/data. A local root may hold
torchvision's layouts (`MNIST/raw/...`, `cifar-10-batches-py/...`) or, for CIFAR-10,
an ImageFolder copy `CIFAR-10-images/{train,test}/<class>/*.jpg`.

Pixels are scaled to [0, 1]; no other normalisation. The Section 2-3 networks train
without augmentation (the paper names none); Section 4's train with `Augment` (random
4-pixel pads and crops and horizontal flips, Appendix I.3).
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lth_lib.paths import atomic_write, env_path
from lth_lib.protocol import VALIDATION_EXAMPLES
from lth_lib.seeding import generator, hash32

DATA_ENV = "LTH_DATA"
DEFAULT_ROOT = Path.home() / ".cache" / "lth" / "data"
DECODED = Path.home() / ".cache" / "lth" / "decoded"  # JPEG copies decoded once (`_decode_images`)

COPIES = {  # the copies of each data set `data_copy` can find
    "mnist": ("mnist-torchvision",),
    "cifar10": ("cifar10-torchvision", "cifar10-jpeg-imagefolder"),
}
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
        if download or (base / "MNIST" / "raw" / "train-images-idx3-ubyte").exists() or _packed(base, name):
            return "mnist-torchvision"
    elif name == "cifar10":
        if download or (base / "cifar-10-batches-py").is_dir():
            return "cifar10-torchvision"
        if (base / "CIFAR-10-images" / "train").is_dir() or _packed(base, name):
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
    files = None if copy == "cifar10-torchvision" else _local_files(Path(base), name)
    if files is None:  # torchvision's own layout, or its download
        train, test = _torchvision_splits(name, Path(base), download)
        (train_x, train_y), (test_x, test_y) = (
            (torch.as_tensor(np.asarray(d.data)), torch.as_tensor(np.asarray(d.targets)))
            for d in (train, test)
        )
    elif name == "mnist":  # the four idx files torchvision reads
        (train_x, train_y), (test_x, test_y) = (
            (
                _idx(files[f"MNIST/raw/{split}-images-idx3-ubyte"]),
                _idx(files[f"MNIST/raw/{split}-labels-idx1-ubyte"]),
            )
            for split in ("train", "t10k")
        )
    else:
        (train_x, train_y), (test_x, test_y) = (
            _decode_images(files, f"CIFAR-10-images/{s}/") for s in ("train", "test")
        )
    if name == "mnist":
        shape = lambda x: x.reshape(len(x), 784)
    else:
        shape = lambda x: x.permute(0, 3, 1, 2).contiguous()  # NHWC uint8 -> NCHW
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


def _decode_images(files: dict[str, bytes], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images under `prefix` (an ImageFolder tree: <prefix><class>/<image>) as NHWC
    uint8, labelled by sorted class folder. Decoding CIFAR-10's 60,000 JPEGs takes seconds
    in every process (each notebook kernel), so the decoded arrays are kept in DECODED
    under the sha256 of the files they come from, with the sha256 of their own bytes: a
    cached file that is missing, truncated or corrupted is decoded again, never served."""
    paths = sorted((p for p in files if p.startswith(prefix)), key=lambda p: p.split("/"))
    source = hashlib.sha256()
    for path in paths:
        source.update(f"{path}\0{len(files[path])}\0".encode())
        source.update(files[path])
    cached = DECODED / f"{source.hexdigest()}.npz"
    try:
        with np.load(cached) as arrays:
            images, labels = arrays["images"], arrays["labels"]
            if hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest() == str(arrays["sha256"]):
                return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    images, labels = _decode(files, paths, prefix)
    try:
        buffer = io.BytesIO()
        digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
        np.savez(buffer, images=images, labels=labels, sha256=np.array(digest))
        DECODED.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, buffer.getvalue())
    except OSError:  # a cache that cannot be written only costs the next process the decoding
        pass
    return torch.from_numpy(images), torch.from_numpy(labels)


def _decode(files: dict[str, bytes], paths: list[str], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    classes = sorted({p[len(prefix) :].split("/")[0] for p in paths})
    images, labels = [], []
    for path in paths:
        with Image.open(io.BytesIO(files[path])) as image:
            images.append(np.asarray(image.convert("RGB")))
        labels.append(classes.index(path[len(prefix) :].split("/")[0]))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _idx(blob: bytes) -> torch.Tensor:
    """An MNIST idx file (images [N, 28, 28] or labels [N]) as uint8."""
    dims = blob[3]
    shape = np.frombuffer(blob, dtype=">u4", count=dims, offset=4).astype(int)
    return torch.from_numpy(np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).copy())


PACKED = {"mnist": "MNIST/raw", "cifar10": "CIFAR-10-images"}  # the folder of each local copy


def pack_data(name: str, path: str | Path, root: str | Path | None = None) -> Path:
    """Every file of data set `name`'s local copy (the folder PACKED[name] under `root`, else
    LTH_DATA) in one compressed NumPy file, to carry to a machine without a copy. A data
    folder holding that file as `<name>.npz` serves as one holding the copy."""
    base, _ = data_root(root)
    files = _local_files(base, name)
    if files is None:
        raise DataNotFoundError(
            f"no {name} files under {base / PACKED[name]} to pack; point {DATA_ENV} at a local copy"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        names=np.frombuffer("\n".join(files).encode(), dtype=np.uint8),
        sizes=np.array([len(blob) for blob in files.values()], dtype=np.int64),
        data=np.frombuffer(b"".join(files.values()), dtype=np.uint8),
    )
    return path


def unpack_data(name: str, path: str | Path, root: str | Path) -> Path:
    """Write the files `pack_data` packed into the folder `root` (for tools that read the
    folder layouts themselves, such as benchmarks/bench.py's reference loop); `root`."""
    root = Path(root)
    for relative, blob in _local_files(Path(path).parent, name, packed=Path(path)).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(blob)
    return root


def _packed(base: Path, name: str) -> Path | None:
    path = base / f"{name}.npz"
    return path if path.is_file() else None


def _local_files(base: Path, name: str, packed: Path | None = None) -> dict[str, bytes] | None:
    """The files of `name`'s local copy by path relative to `base`, in order: from the folder
    PACKED[name], or from the `<name>.npz` that `pack_data` writes (or `packed`); None if
    neither is there."""
    folder = base / PACKED[name]
    if packed is None and folder.is_dir():
        return {
            str(p.relative_to(base)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        } or None
    packed = packed or _packed(base, name)
    if packed is None:
        return None
    with np.load(packed) as arrays:
        names = arrays["names"].tobytes().decode().split("\n")
        ends = np.cumsum(arrays["sizes"])
        data = arrays["data"]
    return {
        n: data[end - size : end].tobytes() for n, end, size in zip(names, ends, np.diff(ends, prepend=0))
    }


PAD = 4  # pixels of zero padding a random crop takes its 32x32 window from


class Augment:
    """Random crops and horizontal flips of each training batch, drawn on the device from
    each member's seed, the step and the example's place in the batch by integer hashing
    (as `models.Dropout`): member k sees what it would see trained alone, reproducibly on
    any device and inside a CUDA graph. Each image is padded with PAD zero pixels on every
    side, a window of its own size is taken at a random offset (one of (2 PAD + 1)^2), and
    it is mirrored left to right with probability 1/2, as torchvision's RandomCrop(32,
    padding=4) and RandomHorizontalFlip do (on pixels in [0, 1]: the padding is black)."""

    def __init__(self, seeds: list[int], step: torch.Tensor):
        # a purpose of its own, so that the bits differ from dropout's
        self.seeds = hash32(hash32(torch.tensor(seeds, dtype=torch.int64, device=step.device)) + 0x41554731)
        self.step = step

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x: [K, B, C, H, W]
        batch, channels, height, width = x.shape[1:]
        key = hash32(self.seeds ^ self.step.long())
        bits = hash32(key.view(-1, 1) + torch.arange(batch, device=x.device) * 0x9E3779B9).flatten()
        span = 2 * PAD + 1
        top, left, flip = bits % span, (bits >> 8) % span, (bits >> 16) & 1
        rows = top[:, None] + torch.arange(height, device=x.device)  # [K*B, H] rows of the padded image
        columns = torch.arange(width, device=x.device)
        columns = left[:, None] + torch.where(flip[:, None].bool(), width - 1 - columns, columns)
        padded = F.pad(x.flatten(0, 1), (PAD, PAD, PAD, PAD))
        examples = torch.arange(len(padded), device=x.device)[:, None, None, None]
        planes = torch.arange(channels, device=x.device)[None, :, None, None]
        out = padded[examples, planes, rows[:, None, :, None], columns[:, None, None, :]]
        return out.view(x.shape)


def validation_split(
    n_train: int, seed: int, size: int = VALIDATION_EXAMPLES
) -> tuple[torch.Tensor, torch.Tensor]:
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


def test_subset(n_test: int, examples: int | None) -> torch.Tensor:
    """The test examples every network is evaluated on: all `n_test` (examples=None), else
    the same random `examples` of them for every network, in order."""
    return torch.randperm(n_test, generator=generator(0, "test-subset"))[:examples].sort().values


def batch_indices(
    train_idx: torch.Tensor, seeds: list[int], batch: int, start: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """Yield [K, batch] example indices: each member reshuffles its own split every epoch.

    Batches that would straddle an epoch's end are dropped. Starting at `start` gives the
    same batches as starting at 0 and skipping `start` of them.
    """
    gens = [generator(seed, "order") for seed in seeds]
    per_epoch = train_idx.shape[1] // batch
    epoch, offset = divmod(start, per_epoch)
    for _ in range(epoch):
        for g in gens:
            torch.randperm(train_idx.shape[1], generator=g)
    while True:
        perm = torch.stack([row[torch.randperm(len(row), generator=g)] for row, g in zip(train_idx, gens)])
        perm = perm[:, : per_epoch * batch].to(device).view(len(seeds), per_epoch, batch)
        for step in range(offset, per_epoch):
            yield perm[:, step]
        offset = 0
