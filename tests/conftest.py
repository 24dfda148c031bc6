"""Shared fixtures: the real MNIST when it is there, a small synthetic data set, and nbval
runs of the notebooks (the float-rounding rerun starts beside the rest of the suite)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from notebook_runs import NICED_KERNEL, OTHER_MACHINE, nbval_started

from lth_lib.data import DATA_ENV, Dataset, load_dataset
from lth_lib.paths import env_path
from lth_lib.regenerate import NOTEBOOK_DIR, main_job

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


RERUN_TEST = "test_checked_outputs_hold_when_float_rounding_changes"


@pytest.fixture(scope="session")
def float_rounding_rerun(tmp_path_factory):
    """The main job's notebooks under nbval as another machine rounds floats (`OTHER_MACHINE`;
    `deeper`'s checked cell prints schedules and captions only, and its smoke run costs CI
    most of a minute more at one thread), in two processes at one thread each sharing one
    results store (folder/other), as two machines could: (folder, [(notebooks, process,
    log)]). They run niced (`NICED_KERNEL`: their kernels too) beside the rest of the suite,
    which leaves most of a core idle."""
    folder = tmp_path_factory.mktemp("float-rounding")
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-other-machine.py").write_text(OTHER_MACHINE)
    (startup / "01-niced-kernel.py").write_text(NICED_KERNEL)
    started = []
    for i, half in enumerate([main_job()[0::2], main_job()[1::2]]):
        log = folder / f"nbval-{i}.log"
        with log.open("w") as out:
            process = nbval_started([NOTEBOOK_DIR / f"{n}.ipynb" for n in half], folder / "other", log=out,
                                    nice=10, IPYTHONDIR=str(folder / "ipython"))  # fmt: skip
        started.append((half, process, log))
    yield folder, started
    for _, process, _ in started:
        process.kill()
        process.wait()


@pytest.fixture(scope="session", autouse=True)
def _float_rounding_rerun_starts_first(request):
    """Start `float_rounding_rerun` before the first test where its test is to run, and the
    local data sets and nbval are there for it."""
    wanted = any(item.name == RERUN_TEST for item in request.session.items)
    local = (data_root() / "CIFAR-10-images").is_dir() and (data_root() / "MNIST").is_dir()
    if wanted and local:
        pytest.importorskip("nbval")
        request.getfixturevalue("float_rounding_rerun")
