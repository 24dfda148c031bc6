"""nbval runs of the notebooks in a process of their own (tests/test_notebooks.py, and the
float-rounding rerun that tests/conftest.py starts beside the suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from lth_lib.regenerate import NOTEBOOK_DIR


def nbval_started(
    paths: list[Path], results: Path, ignore: tuple[str, ...] = (), log: IO | None = None, nice: int = 0,
    **env: str,
) -> subprocess.Popen:  # fmt: skip
    """nbval over `paths` (notebooks, or one folder of them less the notebooks `ignore`
    names) at smoke scale, started in their folder; its output piped, or into `log` (an
    open file); at niceness `nice` (its kernels too, only where an IPython startup file
    `NICED_KERNEL` in its IPYTHONDIR renices their sessions)."""
    folder = paths[0] if paths[0].is_dir() else paths[0].parent
    env = {**os.environ, "LTH_SCALE": "smoke", "LTH_RESULTS": str(results), **env}
    command = [
        *(["nice", "-n", str(nice)] if nice else []),
        sys.executable,
        "-m",
        "pytest",
        *map(str, paths),
        "--nbval-lax",
        "--nbval-current-env",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbval-sanitize-with",
        str(NOTEBOOK_DIR / "nbval-sanitize.cfg"),
        "--rootdir",
        str(folder),
        *(f"--ignore={folder / name}.ipynb" for name in ignore),
    ]
    output = subprocess.PIPE if log is None else log
    return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT if log else subprocess.PIPE,
                            text=True, cwd=folder)  # fmt: skip


# Another machine's float rounding, in a kernel: oneDNN off and another thread count.
OTHER_MACHINE = """
import torch
torch.backends.mkldnn.enabled = False
torch.set_num_threads(1 if torch.get_num_threads() > 1 else 2)
"""

# A niced run's kernels, niced as a group: jupyter_client starts each kernel in a session of
# its own, and Linux's autogroup scheduling shares the CPU between sessions whatever their
# processes' niceness, so they would otherwise take as much as the tests beside them.
NICED_KERNEL = """
import os
try:
    with open("/proc/self/autogroup", "w") as autogroup:
        autogroup.write(str(os.nice(0)))
except OSError:  # no autogroup scheduling here
    pass
"""
