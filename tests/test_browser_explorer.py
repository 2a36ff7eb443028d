"""The explorer (notebook 08) in a real browser: JupyterLab on a free local port, headless Chromium.

The test prepares smoke-profile results of two methods in a fresh cache, opens a parameterised copy of
``notebooks/08_explore.ipynb`` in JupyterLab, runs every cell, then changes the method and the landmark with the
explorer's dropdowns. It checks that the rendered image changes and that the ellipse parameters shown (Σ̂ and Σ
size, ratio, σmaj, θ) are those :func:`lmkcore.reporting.widgets.view_content` gives for the selection. A
screenshot of the page is saved to ``$LMKCORE_SCREENSHOT_DIR`` (default: the test's tmp folder).

Uses Debian's ``chromium`` through Playwright (no browser download); skipped with the reason when either is missing.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (Debian) to run the "
                                                "explorer's browser test"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: "
                                                                   "pip install -e '.[dev]'")

METHODS = ("scn_aniso", "scn_iso")  # two cached methods to switch between
ELLIPSE_KEYS = [f"{label} {name}" for label in ("Σ̂", "Σ")
                for name in ("size σmaj·σmin (mm²)", "ratio σmaj:σmin", "σmaj (mm)", "θ (deg)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shown(text: str) -> float:
    """A number as :func:`lmkcore.reporting.widgets.format_numbers` shows it ('–' for NaN, yes/no for flags)."""
    text = text.strip()
    if text == "–":
        return float("nan")
    if text.startswith(("yes", "no")):
        return float(text.startswith("yes"))
    return float(text)


def _close(shown: float, expected: float) -> bool:
    if not np.isfinite(expected):
        return not np.isfinite(shown)
    return abs(shown - expected) <= 5e-3 * max(abs(expected), 1e-9) + 1e-12  # 3 significant digits


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """A fresh cache with the smoke-profile results of :data:`METHODS` on the synthetic data, and the explorer's
    source over it (what the notebook's explorer reads)."""
    from lmkcore.reporting.notebook import setup_notebook
    from lmkcore.reporting.widgets import ExplorerSource, default_methods

    tmp = tmp_path_factory.mktemp("explorer")
    cache = os.environ.get("LMKCORE_BROWSER_TEST_CACHE") or str(tmp / "cache")  # reuse one between runs if set
    ctx = setup_notebook("08_explore", "smoke", "synthetic", None, "cpu", 0, str(tmp / "figures"), cache)
    record = ctx.load_dataset()
    for m in METHODS:
        ctx.experiment(record, m, progress=False)
    source = ExplorerSource({"synthetic": record}, ctx.profile, ctx.cache_dir, ctx.seed, default_methods(record))
    return tmp, ctx, source


@pytest.fixture(scope="module")
def jupyterlab(smoke_results):
    """JupyterLab serving a parameterised copy of notebook 08 on a free port; yields (url, folder)."""
    import papermill as pm

    tmp, ctx, _ = smoke_results
    work = tmp / "lab"
    work.mkdir()
    pm.execute_notebook(str(REPO / "notebooks" / "08_explore.ipynb"), str(work / "08_explore.ipynb"),
                        parameters={"profile": "smoke", "device": "cpu", "seed": 0,
                                    "figures_dir": str(tmp / "figures"), "cache_dir": str(ctx.cache_dir)},
                        prepare_only=True, progress_bar=False)
    port, token = _free_port(), "lmkcore-test"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "jcfg"), JUPYTER_RUNTIME_DIR=str(tmp / "jrun"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "jsettings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "jws"),
               JUPYTER_PLATFORM_DIRS="1")
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0",
         "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True", "--allow-root"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start: {(tmp / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"{url}/lab/tree/08_explore.ipynb?token={token}", tmp
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _norm(text: str) -> str:
    """Option labels as ipywidgets renders them use non-breaking spaces."""
    return text.replace("\xa0", " ").strip()


def _numbers(page) -> dict[str, str]:
    """The explorer's numbers table (first HTML widget table), label -> shown text."""
    rows = page.eval_on_selector_all(
        ".widget-html table tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))")
    return {_norm(r[0]): _norm(r[1]) for r in rows if len(r) == 2}


def _select(page, label: str):
    return page.locator(f".widget-dropdown:has(label:text-is('{label}')) select")


def _wait_change(page, before: bytes, image, timeout_s: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        page.wait_for_timeout(500)
        now = image.screenshot()
        if now != before:
            page.wait_for_timeout(500)  # let the numbers table of the same update land
            return image.screenshot()
    raise AssertionError("the explorer's image did not change")


def test_explorer_in_headless_chromium(jupyterlab, smoke_results):
    from lmkcore.reporting.widgets import ExplorerState, view_content

    url, tmp = jupyterlab
    _, ctx, source = smoke_results
    shots = Path(os.environ.get("LMKCORE_SCREENSHOT_DIR", tmp))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            try:  # a fresh JupyterLab asks which kernel to start
                page.get_by_role("button", name="Select", exact=True).click(timeout=30_000)
            except playwright_api.Error:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-KernelStatus", timeout=60_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            image = page.locator("img.widget-image").first
            try:
                image.wait_for(timeout=180_000)
            except playwright_api.Error:
                page.screenshot(path=str(shots / "browser_explorer_failure.png"), full_page=True)
                raise
            # the notebook's later cells drive the explorer themselves (update timings): wait until they are done
            page.wait_for_function("() => /\\(ipykernel\\)\\s*\\|\\s*Idle/.test(document.body.innerText)", timeout=300_000)
            method, landmark, img_select = _select(page, "method"), _select(page, "landmark"), _select(page, "image")
            page.wait_for_function("() => document.querySelectorAll('.widget-html table tr').length > 3",
                                   timeout=60_000)
            # ipywidgets' <select> values are the option labels: "scn_aniso · SCN, Σ-target (...)", "L3 Name"
            method_labels = [_norm(t) for t in method.locator("option").all_text_contents()]
            landmark_labels = [_norm(t) for t in landmark.locator("option").all_text_contents()]
            old_method = _norm(method.input_value()).split(" · ")[0]
            assert old_method in METHODS  # a cached method is selected first
            new_method = next(m for m in METHODS if m != old_method)
            before = image.screenshot()
            wanted = [i for i, lb in enumerate(method_labels) if lb.split(" · ")[0] == new_method]
            assert wanted, method_labels
            method.select_option(index=wanted[0])
            after_method = _wait_change(page, before, image)
            landmark.select_option(index=2)  # L3
            after_landmark = _wait_change(page, after_method, image)
            assert len({before, after_method, after_landmark}) == 3
            state = ExplorerState("synthetic", _norm(method.input_value()).split(" · ")[0], _norm(img_select.input_value()),
                                  landmark_labels.index(_norm(landmark.input_value())))
            assert (state.method, state.landmark) == (new_method, 2)
            shown = _numbers(page)
            explorer = page.locator(".widget-vbox").first
            explorer.scroll_into_view_if_needed()
            explorer.screenshot(path=str(shots / "browser_explorer.png"))
        finally:
            browser.close()
    expected = view_content(source, state)
    assert expected["status"] == "ok"
    for key in ELLIPSE_KEYS:
        assert key in expected["numbers"], key
        assert key in shown, (key, sorted(shown))
        ratio = expected["numbers"][key.split(" ")[0] + " ratio σmaj:σmin"]
        if key.endswith("θ (deg)") and not ratio > 1.01:
            continue  # the orientation of a (near) circle is undefined
        assert _close(_shown(shown[key]), expected["numbers"][key]), (key, shown[key], expected["numbers"][key])
    for key, value in expected["numbers"].items():  # the other numbers of the view too (error, heatmap peak...)
        assert _close(_shown(shown[key]), value) or key.endswith("θ (deg)"), (key, shown[key], value)
    # and not those of the first selection (another method and landmark)
    first = view_content(source, ExplorerState("synthetic", old_method, state.image, 0))
    assert any(not _close(_shown(shown[k]), v) for k, v in first["numbers"].items() if k in shown)
