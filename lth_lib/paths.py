"""Where relative paths point (the project's root folder, wherever a process starts), and
writing a file so that no reader ever sees half of it.

The tests, JupyterLab, papermill and nbval start kernels in `notebooks/`, the README's
commands run in the project root, and a researcher may start Python anywhere. So a
relative `LTH_DATA`, `LTH_RESULTS` or notebook path parameter is taken from the project
root (the folder holding `pyproject.toml` beside `lth_lib/`), whichever folder the
process runs in. Where `lth_lib` is installed outside a checkout, from the current folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]
PROJECT: Path | None = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else None


def project_path(path: str | Path) -> Path:
    """`path` made absolute: a relative one is taken from the project root."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return (PROJECT or Path.cwd()) / path


def env_path(variable: str) -> Path | None:
    """The folder environment variable `variable` names (absolute), or None if unset."""
    value = os.environ.get(variable)
    return project_path(value) if value else None


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
