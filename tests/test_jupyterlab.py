"""tickets.ipynb in JupyterLab in a real browser: it runs clean, draws, and its round slider redraws;
and a kept notebook (figures/notebooks/) shows the figure it links rather than embeds.

JupyterLab runs with private Jupyter folders at smoke scale in a temporary results store;
headless Chromium (Debian's, through Playwright) opens the notebook, runs every cell, checks
that nothing went to stderr or raised, that a figure rendered, and that moving the `round`
slider redraws the figure in its output widget. The screenshot goes to
out/browser/jupyterlab-tickets.png. It also opens a notebook the committed run kept
(figures/notebooks/), which links its figure rather than embed it, and checks the figure
loaded (screenshot: out/browser/jupyterlab-kept-figure.png). Skipped
where Chromium, Playwright or JupyterLab is missing, unless CI=true, where that fails instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import pytest
from helpers import unavailable

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/tickets.ipynb"  # relative to the server's root, the project
SCREENSHOT = PROJECT / "out" / "browser" / "jupyterlab-tickets.png"
KEPT_SCREENSHOT = PROJECT / "out" / "browser" / "jupyterlab-kept-figure.png"
CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.access(p, os.X_OK)), None
)
RUN_ALL_TIMEOUT_S = 180

# Selectors (JupyterLab 4, ipywidgets 8)
# stderr and tracebacks both render with this MIME type
ERROR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
IMAGE = ".jp-RenderedImage img"
LINKED_IMAGE = '.jp-OutputArea-output[data-mime-type="text/markdown"] img'  # a figure a kept notebook links
WIDGET_IMAGE = ".widget-output .jp-RenderedImage img"  # a figure inside an ipywidgets.Output
OUTPUT_CHILD = ".jp-OutputArea-child"  # one displayed output (here: the VBox of a slider and its Output)
SLIDER = ".widget-slider"
SLIDER_LABEL = ".widget-label"
SLIDER_HANDLE = ".noUi-handle"  # noUiSlider's handle: focusable, with aria-valuenow/aria-valuemax
SLIDER_READOUT = ".widget-readout"

# The notebook panel of `path` in the JupyterLab app, its kernel, its code cells' execution
# counts and any error or stderr output in its model (window.jupyterapp: expose_app_in_browser).
NOTEBOOK_STATE_JS = """(path) => {
  const app = window.jupyterapp;
  if (!app) return {ready: false, why: 'window.jupyterapp is not there yet'};
  const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === path);
  const kernel = panel && panel.context.isReady && panel.sessionContext.session?.kernel;
  if (!kernel) return {ready: false, why: 'the notebook or its kernel is not ready yet'};
  const code = panel.content.widgets.filter(c => c.model.type === 'code');
  const problems = [];
  for (const cell of code) {
    for (let i = 0; i < cell.model.outputs.length; i++) {
      const out = cell.model.outputs.get(i).toJSON();
      if (out.output_type === 'error') problems.push(`${out.ename}: ${out.evalue}`);
      if (out.output_type === 'stream' && out.name === 'stderr') problems.push(`stderr: ${out.text}`);
    }
  }
  return {
    ready: true, id: panel.id, kernel: kernel.name, status: kernel.status, problems,
    // JupyterLab does not send an empty cell to the kernel, so it never gets a count
    counts: code.filter(c => c.model.sharedModel.getSource().trim()).map(c => c.model.executionCount),
  };
}"""


def _require_tools() -> None:
    """Skip (or fail under CI) where Chromium, Playwright, JupyterLab or its widgets are missing."""
    if CHROMIUM is None:
        unavailable("no Chromium: apt-get install chromium")
    for module in ("playwright", "jupyterlab", "jupyterlab_widgets", "ipywidgets"):
        if importlib.util.find_spec(module) is None:
            unavailable(f"{module} is not installed: pip install -e '.[test]'")


# --- JupyterLab -------------------------------------------------------------------------------


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def api(self, path: str, method: str = "GET") -> dict:
        """A JSON answer from the server's REST API."""
        request = urllib.request.Request(f"{self.url}{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else {}

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """The ids of `pid`'s child processes, their children and so on (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


@contextlib.contextmanager
def jupyterlab(root: Path, tmp: Path, **env: str) -> Iterator[Lab]:
    """JupyterLab serving `root` on a free local port with a random token; always stopped after.

    Private Jupyter config, data, runtime and IPython folders under `tmp`; the kernel specs
    and lab extensions of this Python's environment (sys.prefix) stay visible. `env` is added
    to the server's (and so the kernels') environment.
    """
    port, token = _free_port(), secrets.token_hex(16)
    config = tmp / "jupyter-config"
    (config / "labconfig").mkdir(parents=True)
    # no "get Jupyter news?" toast over the notebook
    disabled = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
    (config / "labconfig" / "page_config.json").write_text(json.dumps(disabled))
    settings = config / "lab" / "user-settings" / "@jupyterlab"
    for plugin, value in {
        "notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the DOM, for the selectors
        "docmanager-extension/plugin": {"autosave": False},  # the served notebook is never written
    }.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(value))
    server_env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH")}
    server_env.update(
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        IPYTHONDIR=str(tmp / "ipython"),
        **env,
    )
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--FileCheckpoints.root_dir={tmp / 'checkpoints'}",  # no .ipynb_checkpoints/ beside the notebook
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, for its commands and models
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=server_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, process, log)
    try:
        _wait_until_serving(lab)
        yield lab
    finally:
        _stop(lab)


def _wait_until_serving(lab: Lab, timeout_s: float = 90) -> None:
    """Wait until the server answers /api/status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {lab.process.returncode}:\n{lab.log_tail()}")
        with contextlib.suppress(OSError):
            lab.api("/api/status")
            return
        time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer in {timeout_s} s:\n{lab.log_tail()}")


def _stop(lab: Lab) -> None:
    """Stop the server and its kernels: /api/shutdown, then SIGTERM and SIGKILL to what is left."""
    started = _descendants(lab.process.pid)  # the kernels run in process groups of their own
    with contextlib.suppress(OSError):
        lab.api("/api/shutdown", method="POST")
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lab.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            lab.process.wait(timeout=10)
            break
    for pid in started:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- the browser ------------------------------------------------------------------------------


@contextlib.contextmanager
def chromium_page() -> Iterator:
    """A Playwright page in headless Chromium (the system's executable); always closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def run_all_cells(page, lab: Lab, notebook: str) -> dict:
    """Open `notebook` (a path under the server's root), run all cells, wait for the last one.

    Returns the notebook's state (NOTEBOOK_STATE_JS); fails at once on an error output.
    """
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}", wait_until="domcontentloaded")
    ready = f"({NOTEBOOK_STATE_JS})({json.dumps(notebook)}).status === 'idle'"
    page.wait_for_function(ready, timeout=120_000)
    page.evaluate(
        """async (id) => {
          window.jupyterapp.shell.collapseLeft();  // more room for the notebook in the screenshot
          window.jupyterapp.shell.activateById(id);
          window.jupyterapp.commands.execute('notebook:run-all-cells');  // not awaited: polled below
        }""",
        page.evaluate(NOTEBOOK_STATE_JS, notebook)["id"],
    )
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    while True:
        state = page.evaluate(NOTEBOOK_STATE_JS, notebook)
        assert not state["problems"], f"{notebook}: " + "\n".join(state["problems"])
        if state["status"] == "idle" and None not in state["counts"]:
            return state
        assert time.monotonic() < deadline, f"{notebook} did not finish in {RUN_ALL_TIMEOUT_S} s: {state}"
        time.sleep(0.5)


def check_outputs(page) -> None:
    """No stderr or traceback in the page, and at least one figure that loaded."""
    errors = page.locator(ERROR_OUTPUT).all_inner_texts()
    assert not errors, "error output:\n" + "\n---\n".join(errors)
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('{IMAGE}')).some(i => i.src && i.complete && i.naturalWidth > 0)"
    )


def move_round_slider(page) -> tuple[str, str]:
    """Press an arrow key on the (first) `round` slider; check its readout and its figure changed.

    Returns the readout before and after.
    """
    from playwright.sync_api import expect

    sliders = page.locator(SLIDER, has=page.locator(SLIDER_LABEL, has_text=re.compile(r"^\s*round\s*$")))
    expect(sliders.first, "no rendered ipywidgets IntSlider 'round' (widgets not installed?)").to_be_visible()
    slider = sliders.first
    handle, readout = slider.locator(SLIDER_HANDLE), slider.locator(SLIDER_READOUT)
    images = page.locator(OUTPUT_CHILD, has=slider).locator(WIDGET_IMAGE)  # the figure displayed with it
    before, images_before = readout.inner_text(), _loaded_sources(images)
    assert images_before, "no figure inside an ipywidgets.Output beside the slider"
    at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    handle.focus()
    page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
    expect(readout).not_to_have_text(before, timeout=10_000)
    deadline = time.monotonic() + 30
    while _loaded_sources(images) in ([], images_before):
        assert time.monotonic() < deadline, "the figure beside the slider did not change"
        time.sleep(0.25)
    return before, readout.inner_text()


def _loaded_sources(images) -> list[str]:
    """The src of each loaded image that `images` (a locator) finds."""
    return images.evaluate_all("imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)")


def check_notebook_in_lab(page, lab: Lab, notebook: str, screenshot: Path) -> dict:
    """The whole check on `notebook`; saves a full-page screenshot (also when a check fails)."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    try:
        state = run_all_cells(page, lab, notebook)
        check_outputs(page)
        state["readout"] = move_round_slider(page)
        page.locator(WIDGET_IMAGE).last.scroll_into_view_if_needed()  # the slider and its figure
        return state
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=screenshot, full_page=True)
            print(f"screenshot: {screenshot}")


# --- the test ---------------------------------------------------------------------------------


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    """JupyterLab on the project at smoke scale, results in tmp_path (skipped without the tools)."""
    _require_tools()
    env = {"LTH_SCALE": "smoke", "LTH_RESULTS": str(tmp_path / "results")}
    data = PROJECT.parent / "shared" / "data"
    if "LTH_DATA" not in os.environ and data.is_dir():
        env["LTH_DATA"] = str(data)  # as tests/conftest.py's data_root()
    with jupyterlab(PROJECT, tmp_path, **env) as server:
        yield server


@pytest.fixture
def page(lab) -> Iterator:
    """A headless Chromium page (closed before the server stops)."""
    with chromium_page() as browser_page:
        yield browser_page


def _kernel_pythons(lab: Lab) -> list[str]:
    """The executable of each ipykernel the server started."""
    commands = []
    for pid in _descendants(lab.process.pid):
        with contextlib.suppress(OSError):
            commands.append(Path(f"/proc/{pid}/cmdline").read_text().split("\0"))
    return [c[0] for c in commands if "ipykernel_launcher" in c]


def test_tickets_notebook_runs_in_jupyterlab_and_its_round_slider_redraws(lab, page):
    stored = (PROJECT / NOTEBOOK).read_bytes()
    wanted = json.loads(stored)["metadata"]["kernelspec"]["name"]
    assert wanted in lab.api("/api/kernelspecs")["kernelspecs"], (
        f"{NOTEBOOK}'s kernel {wanted!r} is not there"
    )
    state = check_notebook_in_lab(page, lab, NOTEBOOK, SCREENSHOT)
    assert state["kernel"] == wanted
    assert _kernel_pythons(lab) == [sys.executable], "the kernel is not this environment's Python"
    assert (PROJECT / NOTEBOOK).read_bytes() == stored, "JupyterLab wrote to the notebook"
    before, after = state["readout"]
    print(f"{NOTEBOOK}: {len(state['counts'])} code cells run; round slider {before} -> {after}")


def test_a_kept_notebook_shows_its_linked_figure_in_jupyterlab(lab, page):
    """figures/notebooks/weight_travel.ipynb, as the committed run kept it, shows its figure
    from the PNG it links (figures/lenet300-weight-travel.png), with no image embedded."""
    kept = "figures/notebooks/weight_travel.ipynb"
    png = PROJECT / "figures" / "lenet300-weight-travel.png"
    width = matplotlib.image.imread(png).shape[1]
    KEPT_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(f"{lab.url}/lab/tree/{kept}?token={lab.token}", wait_until="domcontentloaded")
        page.wait_for_function(
            f"Array.from(document.querySelectorAll('{LINKED_IMAGE}')).some(i => i.complete && i.naturalWidth > 0)",
            timeout=120_000,
        )
        images = page.locator(LINKED_IMAGE).evaluate_all(
            "imgs => imgs.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth}))"
        )
        assert len(images) == 1 and images[0]["width"] == width, images
        assert "/files/figures/lenet300-weight-travel.png" in images[0]["src"], images
        assert page.locator(IMAGE).count() == 0, "an embedded image in a notebook that links its figure"
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=KEPT_SCREENSHOT, full_page=True)
            print(f"screenshot: {KEPT_SCREENSHOT}")
