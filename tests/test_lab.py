"""The interactive path as a reader takes it: ``make lab``'s JupyterLab, one chapter, one widget.

A copy of book/layered_rendering.ipynb (test profile, outputs in a temporary folder: nothing
under book/ is run or saved) is served by JupyterLab on 127.0.0.1 with a random token and opened
in headless Chromium, driven by selenium through Debian's chromedriver, with every host but
127.0.0.1 unreachable. The test clicks Run > Run All Cells, waits for every code cell to finish
without an error, then drags the slider of the chapter's wiggle widget (Play + IntSlider
jslinked to a Stack of the two dual-pixel views) from 0 to 1. The image shown must switch from
the left view to the right one: its pixels are compared with ``dp.left`` / ``dp.right`` read
from the same kernel through a second client, converted to 8 bits by hand (x2, x255, rounded).
A screenshot after the move lands in _build/screenshots/lab_layered_rendering.png.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from harness import ROOT

CHAPTER = ROOT / "book" / "layered_rendering.ipynb"
SCREENSHOT = ROOT / "_build" / "screenshots" / "lab_layered_rendering.png"
RUN_ALL_TIMEOUT_S = 600      # the test profile runs in about a minute; generous for a loaded machine
START_TIMEOUT_S = 180


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chromedriver() -> str | None:
    return shutil.which("chromedriver")


def _why_no_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements.txt)"
    if _chromium() is None:
        return "Chromium is not installed (apt-get install chromium); .ci/run installs it"
    if _chromedriver() is None:
        return "chromedriver is not installed (apt-get install chromium-driver); .ci/run installs it"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why_no_browser() is not None, reason=str(_why_no_browser()))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_chapter(folder: Path, output_dir: Path) -> str:
    """The chapter, parameters set to the test profile and ``output_dir``, saved into ``folder``."""
    nb = json.loads(CHAPTER.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{CHAPTER.name} needs exactly one cell tagged 'parameters'"
    tagged[0]["source"] = (f'profile = "test"\ndevice = "auto"\ndata_dir = None\n'
                           f"output_dir = {str(output_dir)!r}\nseed = 0\n")
    (folder / CHAPTER.name).write_text(json.dumps(nb, indent=1))
    return CHAPTER.name


class Lab:
    """A JupyterLab server on 127.0.0.1, as ``make lab`` starts it, isolated in a temporary folder."""

    def __init__(self, tmp: Path):
        self.root = tmp / "lab"
        self.root.mkdir()
        self.runtime = tmp / "runtime"
        self.notebook = _copy_chapter(self.root, tmp / "outputs")
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "lab.log"
        # No news feed and no update check: no request leaves the machine, no toast covers the page.
        settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ,
                   # the kernel shows figures as a reader's does (the test run sets MPLBACKEND=agg)
                   MPLBACKEND="module://matplotlib_inline.backend_inline", TQDM_DISABLE="1",
                   JUPYTER_RUNTIME_DIR=str(self.runtime), JUPYTER_CONFIG_DIR=str(tmp / "config"),
                   JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
                   IPYTHONDIR=str(tmp / "ipython"))
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:   # CI containers run as root
            cmd.append("--allow-root")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def api(self, path: str, method: str = "GET", timeout: float = 10):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("/api/status", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        pytest.fail(f"jupyter lab did not answer on {self.url} within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Shut the kernels and the server down, by the API first and by signal if that fails."""
        if self.proc.poll() is None:
            try:
                for kernel in self.api("/api/kernels"):
                    self.api(f"/api/kernels/{kernel['id']}", method="DELETE", timeout=30)
                self.api("/api/shutdown", method="POST")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            for sig in (self.proc.terminate, self.proc.kill):
                try:
                    self.proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    sig()
            self.proc.wait(timeout=30)


@pytest.fixture
def lab(tmp_path):
    server = Lab(tmp_path)
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}",
                 # networking off: every host but the local server resolves to nothing
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(flag)
    service = Service(executable_path=_chromedriver(), log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(service=service, options=opts)   # a path given: no Selenium Manager
    browser.set_script_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


# The notebook panel of the chapter, once JupyterLab shows it with its kernel idle.
_PANEL_JS = """
const app = window.jupyterapp, name = arguments[0];
if (!app || !app.shell) return null;
const w = app.shell.currentWidget;
if (!w || !w.context || w.context.path !== name || !w.content || !w.sessionContext) return null;
const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
return kernel ? {kernel: kernel.status, id: kernel.id, cells: w.content.widgets.length} : null;
"""

# Progress of Run All: code cells not yet run (or running), error outputs, the kernel status.
_PROGRESS_JS = """
const w = window.jupyterapp.shell.currentWidget;
const cells = w.content.widgets.filter(c => c.model.type === 'code');
const pending = [], errors = [];
let started = false;
cells.forEach((c, i) => {
  const prompt = c.promptNode ? c.promptNode.textContent : '';
  if (c.model.executionCount === null || prompt.includes('*')) pending.push(i);
  if (c.model.executionCount !== null || prompt.includes('*')) started = true;
  for (let k = 0; k < c.model.outputs.length; k++) {
    const out = c.model.outputs.get(k).toJSON();
    if (out.output_type === 'error') errors.push(`code cell ${i}: ${out.ename}: ${out.evalue}`);
  }
});
const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
return {pending: pending, errors: errors, started: started, kernel: kernel ? kernel.status : 'none',
        count: cells.length};
"""

# The image the wiggle widget shows now (its Stack holds one view at a time), as base64 PNG bytes.
_SHOWN_IMAGE_JS = """
const done = arguments[arguments.length - 1];
const box = arguments[0].closest('.widget-vbox');
const imgs = box ? Array.from(box.querySelectorAll('img.widget-image')) : [];
if (imgs.length !== 1 || !imgs[0].complete || !imgs[0].naturalWidth) { done(null); return; }
fetch(imgs[0].src).then(r => r.arrayBuffer()).then(buf => {
  let s = ''; const b = new Uint8Array(buf);
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  done({src: imgs[0].src, png: btoa(s)});
}).catch(e => done({error: String(e)}));
"""


def _wait(what: str, probe, timeout: float, poll: float = 0.5, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{detail()}")


def _decode(png_b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB"))


def _views_from_kernel(lab: Lab, kernel_id: str, target: Path) -> dict[str, np.ndarray]:
    """``dp.left`` / ``dp.right`` of the reader's kernel, read through a second client."""
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient(connection_file=str(lab.runtime / f"kernel-{kernel_id}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        code = (f"import numpy as _np\n_np.savez({str(target)!r}, left=dp.left[0].permute(1, 2, 0).numpy(), "
                "right=dp.right[0].permute(1, 2, 0).numpy())")
        reply = client.execute_interactive(code, timeout=60, store_history=False, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", f"reading dp.left/dp.right failed: {reply['content']}"
    finally:
        client.stop_channels()
    with np.load(target) as f:
        return {name: f[name] for name in ("left", "right")}


def _as_shown(view: np.ndarray) -> np.ndarray:
    """A view in [0, 1/2] as the widget shows it: times 2 (dplab's views carry half the light), 8 bits."""
    rgb = np.repeat(view, 3, axis=-1) if view.shape[-1] == 1 else view
    return np.clip(np.rint(rgb.astype(np.float64) * 2.0 * 255.0), 0, 255).astype(np.uint8)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, f"shown image {a.shape} vs view {b.shape}"
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_lab_runs_the_chapter_and_the_wiggle_widget_switches_views(lab, driver, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    t0 = time.monotonic()
    driver.get(f"{lab.url}/lab/tree/{lab.notebook}?token={lab.token}")
    panel = _wait("JupyterLab to open the chapter with an idle kernel",
                  lambda: (p := driver.execute_script(_PANEL_JS, lab.notebook)) and p["kernel"] == "idle" and p,
                  START_TIMEOUT_S, detail=lab.log_tail)

    # Run > Run All Cells, as a reader does it.
    driver.find_element(By.XPATH, "//li[contains(@class, 'lm-MenuBar-item')][normalize-space(.)='Run']").click()
    _wait("Run All Cells in the Run menu", lambda: driver.find_elements(By.CSS_SELECTOR, (
        "li.lm-Menu-item[data-command='runmenu:run-all'], "
        "li.lm-Menu-item[data-command='notebook:run-all-cells']")), 30)[0].click()

    progress = {}

    def finished():
        progress.update(driver.execute_script(_PROGRESS_JS))
        if progress["errors"]:
            pytest.fail(f"{lab.notebook} raised under JupyterLab:\n" + "\n".join(progress["errors"]))
        if progress["kernel"] in ("dead", "autorestarting"):
            pytest.fail(f"the kernel died while running {lab.notebook}:\n{lab.log_tail()}")
        return not progress["pending"] and progress["kernel"] == "idle"

    # The chapter is committed without execution counts, so every code cell starts out pending.
    _wait("Run All Cells to start (queued cells show [*])", lambda: finished() or progress["started"], 60)
    _wait("Run All Cells to finish", finished, RUN_ALL_TIMEOUT_S, poll=2,
          detail=lambda: f"code cells still pending {progress.get('pending')} of {progress.get('count')}, "
                         f"kernel {progress.get('kernel')}\n{lab.log_tail()}")
    ran_s = time.monotonic() - t0

    sliders = _wait("the wiggle widget's slider", lambda: driver.find_elements(By.CSS_SELECTOR, ".widget-slider"), 60)
    assert len(sliders) == 1, f"expected one slider (the wiggle widget), found {len(sliders)}"
    slider = sliders[0]
    driver.execute_script("arguments[0].closest('.widget-vbox').scrollIntoView({block: 'center'});", slider)
    assert slider.find_element(By.CSS_SELECTOR, ".widget-readout").text.strip() == "0", "the slider did not start at 0"
    before = _wait("the widget's first image", lambda: driver.execute_async_script(_SHOWN_IMAGE_JS, slider), 60)
    assert "error" not in before, before

    # Drag the handle from 0 to the right end of the track, as a reader does with the mouse.
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    track = slider.find_element(By.CSS_SELECTOR, ".noUi-target")
    ActionChains(driver).click_and_hold(handle).move_by_offset(track.size["width"] // 2, 0) \
        .move_by_offset(track.size["width"] // 2, 0).release().perform()
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    _wait("the slider to read 1", lambda: readout.text.strip() == "1", 30,
          detail=lambda: f"the readout says {readout.text!r}")
    after = _wait("the widget to show the other image", lambda: (a := driver.execute_async_script(
        _SHOWN_IMAGE_JS, slider)) and a.get("src") != before["src"] and a, 30)
    assert "error" not in after, after

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    driver.execute_script("arguments[0].closest('.widget-vbox').scrollIntoView({block: 'center'});", slider)
    driver.save_screenshot(str(SCREENSHOT))

    shown_before, shown_after = _decode(before["png"]), _decode(after["png"])
    views = _views_from_kernel(lab, panel["id"], tmp_path / "views.npz")
    left, right = _as_shown(views["left"]), _as_shown(views["right"])
    assert _max_diff(left, right) > 8, "the left and right views are alike: the test could not tell them apart"
    assert _max_diff(shown_before, left) <= 1, "before the move the widget did not show the left view"
    assert _max_diff(shown_after, right) <= 1, "after the move the widget did not show the right view"
    assert not np.array_equal(shown_before, shown_after)
    print(f"JupyterLab: chapter opened and ran in {ran_s:.0f} s; widget switched L -> R "
          f"(max |L - R| = {_max_diff(left, right)} of 255)")
