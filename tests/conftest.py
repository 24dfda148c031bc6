"""Shared fixtures: the real MNIST when it is there, and a small synthetic data set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lth_lib.data import DATA_ENV, Dataset, load_dataset
from lth_lib.paths import env_path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root() -> Path:
    """LTH_DATA if set (a relative one from the project root), else ../shared/data beside the project."""
    return env_path(DATA_ENV) or SHARED_DATA


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """The real MNIST (skipped with a reason where no local copy exists)."""
    root = data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found under {root}; set {DATA_ENV}")
    return load_dataset("mnist", root)


@pytest.fixture(scope="session")
def local_data() -> Path:
    """The folder holding local MNIST and CIFAR-10 copies (skipped with a reason where none is)."""
    root = data_root()
    if not (root / "MNIST" / "raw").is_dir() or not (root / "CIFAR-10-images").is_dir():
        pytest.skip(f"the local MNIST and CIFAR-10 copies are not under {root}; set {DATA_ENV}")
    return root


def synthetic_dataset() -> Dataset:
    """MNIST-shaped random data whose label is a linear function of the input."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6200, 784, generator=g)
    labels = (x @ torch.randn(784, 10, generator=g)).argmax(1)
    return Dataset("mnist", "synthetic", x[:6000], labels[:6000], x[6000:], labels[6000:])


@pytest.fixture(scope="session")
def synthetic() -> Dataset:
    """`synthetic_dataset()`, built once per session."""
    return synthetic_dataset()
