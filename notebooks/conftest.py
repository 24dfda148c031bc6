"""pytest over notebooks is the project's nbval check, however it is started.

`bash scripts/test`, `bash scripts/test -k conv_cifar10` and `pytest notebooks/lenet_mnist.ipynb`
all run the notebooks at `smoke` scale in a fresh results store and compare only the cells
marked `# NBVAL_CHECK_OUTPUT` (--nbval-lax, unless --nbval asks for every output), in the
current environment's kernel, with the sanitizers in nbval-sanitize.cfg. LTH_SCALE and
LTH_RESULTS already set are kept.
"""

import os
import shutil
import tempfile
from pathlib import Path

_made: list[str] = []


def pytest_configure(config):
    option = config.option
    if not option.nbval:
        option.nbval_lax = True
    option.nbval_current_env = True
    option.nbval_sanitize_with = option.nbval_sanitize_with or str(
        Path(__file__).with_name("nbval-sanitize.cfg")
    )
    os.environ.setdefault("LTH_SCALE", "smoke")
    if not os.environ.get("LTH_RESULTS"):
        _made.append(tempfile.mkdtemp(prefix="lth-nbval-"))
        os.environ["LTH_RESULTS"] = _made[-1]


def pytest_unconfigure(config):
    for folder in _made:
        shutil.rmtree(folder, ignore_errors=True)
