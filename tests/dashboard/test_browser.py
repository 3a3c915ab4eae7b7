"""The served dashboard in headless Chromium: load, click a star, switch, box-select, export.

A tiny demo (300 stars, 40 spectra, the ridge model) is built once and served by
:func:`labelexplorer.dashboard.app.serve` on a free loopback port. Screenshots go to
``artifacts/`` (git-ignored). Chromium is Debian's (/usr/bin/chromium; Playwright never
downloads a browser here); without it the tests skip, except under CI where they fail.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

# Page coordinates of data points of the Bokeh figure whose title starts with a prefix.
_TO_PAGE = """([prefix, points]) => {
  for (const view of Bokeh.index.all_views()) {
    const title = view.model.title ? String(view.model.title.text) : ''
    if (view.model.type === 'Figure' && title.startsWith(prefix)) {
      const box = view.canvas_view.el.getBoundingClientRect()
      return points.map(([x, y]) => [box.left + view.frame.x_scale.compute(x), box.top + view.frame.y_scale.compute(y)])
    }
  }
  return null
}"""
_FIGURE_TITLES = "() => [...Bokeh.index.all_views()].filter(v => v.model.type === 'Figure').map(v => String(v.model.title ? v.model.title.text : ''))"


def _chromium_or_skip() -> None:
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} not found: install Debian's chromium to run the browser tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny demo served on a free port; yields (url, demo, states created by sessions)."""
    _chromium_or_skip()
    from labelexplorer.dashboard.app import serve
    from labelexplorer.dashboard.demo import build_demo

    demo = build_demo(tmp_path_factory.mktemp("demo"), n_stars=300, n_spectra=40, n_galaxies=0, models=["ridge"],
                      workers=1, log=lambda line: None)
    states = []

    def make_state():
        states.append(demo.state())
        return states[-1]

    port = _free_port()
    server = serve(make_state, port=port, show=False, block=False, log=lambda line: None)
    yield f"http://127.0.0.1:{port}/", demo, states
    server.stop()


@pytest.fixture(scope="module")
def browser():
    _chromium_or_skip()
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def session(served, browser):
    """One page on the dashboard, with every request and console message recorded."""
    url, demo, states = served
    page = browser.new_page(viewport={"width": 1600, "height": 1100}, accept_downloads=True)
    requests, console = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: console.append((message.type, message.text)))
    page.on("pageerror", lambda error: console.append(("error", str(error))))
    page.goto(url, wait_until="networkidle")
    page.wait_for_function(f"({_FIGURE_TITLES})().some(t => t.startsWith('ridge:'))", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    yield page, demo, states[-1], requests, console
    page.close()


def _wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def _page_points(page, prefix: str, points) -> list:
    located = page.evaluate(_TO_PAGE, [prefix, [[float(x), float(y)] for x, y in points]])
    assert located is not None, f"no figure titled {prefix!r}"
    return located


def _isolated_star(state, x_column: str, y_column: str) -> int:
    """A star far (in normalised coordinates) from every other, so a click cannot be ambiguous."""
    frame = state.frame([x_column, y_column])
    good = np.flatnonzero(frame.notna().all(axis=1).to_numpy())
    xy = frame.iloc[good].to_numpy(float)
    xy = (xy - xy.min(axis=0)) / np.ptp(xy, axis=0)
    distance = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distance, np.inf)
    return int(good[np.argmax(distance.min(axis=1))])


def test_page_loads_offline_without_console_errors(session, served):
    page, _, _, requests, console = session
    url = served[0]
    outside = [r for r in requests if not r.startswith(url.rstrip("/")) and not r.startswith(("data:", "blob:"))]
    assert outside == [], f"requests left 127.0.0.1: {outside}"
    assert [text for kind, text in console if kind == "error"] == []
    page.screenshot(path=str(ARTIFACTS / "dashboard-loaded.png"), full_page=True)


def test_click_on_the_plane_updates_the_inspector(session):
    page, _, state, _, console = session
    x_column, y_column = "RIDGE__TEFF", "RIDGE__LOGG"
    target = _isolated_star(state, x_column, y_column)
    values = state.frame([x_column, y_column]).iloc[target]
    (px, py), = _page_points(page, "ridge:", [(values[x_column], values[y_column])])
    page.mouse.click(px + 1, py + 1)
    expected = str(state.ids[target])
    expect(page.locator("#active-star")).to_have_text(expected, timeout=30_000)  # locators pierce shadow DOM
    assert state.star == expected
    page.wait_for_function(f"({_FIGURE_TITLES})().includes({expected!r})", timeout=30_000)  # the spectrum plot
    page.screenshot(path=str(ARTIFACTS / "dashboard-star.png"), full_page=True)
    assert [text for kind, text in console if kind == "error"] == []


def test_switching_label_axis_and_source_redraws(session):
    page, _, state, _, _ = session
    label_selects = page.locator("select").filter(has=page.locator("option[value='MG_FE']"))
    sidebar_label, plane_x = label_selects.nth(0), label_selects.nth(1)  # DOM order: sidebar label, plane x, y, colour
    sidebar_label.select_option("FE_H")
    page.wait_for_function(f"({_FIGURE_TITLES})().some(t => t.includes('ridge FE_H'))", timeout=30_000)
    assert state.label == "FE_H"
    plane_x.select_option("FE_H")
    page.wait_for_function(f"({_FIGURE_TITLES})().some(t => t.startsWith('ridge:') && t.endsWith('[Fe/H] (dex)'))",
                           timeout=30_000)
    plane_x.select_option("TEFF")
    page.get_by_role("button", name="reference").click()
    page.wait_for_function(f"({_FIGURE_TITLES})().some(t => t.startsWith('true:'))", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-reference.png"), full_page=True)
    page.get_by_role("button", name="method").click()
    page.wait_for_function(f"({_FIGURE_TITLES})().some(t => t.startsWith('ridge:') && t.endsWith('Teff (K)'))",
                           timeout=30_000)


def test_box_selection_links_views_and_exports_exactly_the_selection(session, tmp_path):
    page, _, state, _, console = session
    frame = state.frame(["RIDGE__TEFF", "RIDGE__LOGG"]).dropna()
    corners = [(frame["RIDGE__TEFF"].quantile(0.2), frame["RIDGE__LOGG"].quantile(0.2)),
               (frame["RIDGE__TEFF"].quantile(0.8), frame["RIDGE__LOGG"].quantile(0.8))]
    (x0, y0), (x1, y1) = _page_points(page, "ridge:", corners)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    _wait_for(lambda: state.selection.size > 0)
    selected = set(state.ids[state.selection])
    inside = frame[(frame["RIDGE__TEFF"].between(*sorted(c[0] for c in corners))) &
                   (frame["RIDGE__LOGG"].between(*sorted(c[1] for c in corners)))]
    assert selected <= set(state.ids[inside.index])  # box edges are pixel-rounded: never more than the box
    assert len(selected) >= 0.5 * len(inside)
    count = str(state.selection.size)
    assert set(state.ids[state.selection]) == selected
    expect(page.locator("#selection-count")).to_have_text(count, timeout=30_000)
    page.keyboard.press("ArrowRight")  # the inspector now steps through the selection
    _wait_for(lambda: state.star in selected)
    with page.expect_download(timeout=30_000) as download:
        page.get_by_role("button", name="Download selection").click()
    path = tmp_path / "selection.csv"
    download.value.save_as(path)
    exported = pd.read_csv(path, dtype={"ID": str})
    assert exported["ID"].tolist() == list(state.ids[state.selection])
    assert set(exported["ID"]) == selected
    page.screenshot(path=str(ARTIFACTS / "dashboard-selection.png"), full_page=True)
    assert [text for kind, text in console if kind == "error"] == []
