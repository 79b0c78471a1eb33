"""The Dagster UI in a real browser: what a user sees after `churn demo` and `churn ui`.

A small demo (800 customers x 6 months, 2024-01 .. 2024-06) is built in a temporary
CHURN_HOME with a policy file that makes monitoring/drift's max_psi check fail and its
drift_share check pass in every month; `churn ui` (webserver + daemon) serves it on a free port and
headless Chromium (Debian's `chromium`, driven by Playwright with ``executable_path``;
Playwright's own browser download is not used) opens the pages. Every test saves
screenshots under its own tmp_path and prints the folder.

Skipped, with the reason, when the playwright package or a Chromium binary is missing
(.ci/run installs Debian's chromium when it runs as root; $CHURN_CHROMIUM names another).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ui_server import DagsterUI, build_demo_home, find_chromium

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (it is a dev dependency: uv sync)"
)
expect = sync_api.expect

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium binary: install Debian's `chromium` package (.ci/run does when run as root) "
               "or set CHURN_CHROMIUM=/path/to/chromium",
    ),
]

CUSTOMERS, MONTHS = 800, 6
# Months past the three warm-up months, whose drift against the champion differs.
MONTH_A, MONTH_B = "2024-04-01", "2024-05-01"
TIMEOUT_MS = 60_000
# What the UI shows when something went wrong loading a page or the definitions.
ERROR_TEXT = re.compile(
    r"failed to load|error loading|an error occurred|something went wrong|unexpected error|"
    r"could not be loaded|PythonError",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The demo home and, read from the warehouse before the UI starts, each month's max_psi.

    $CHURN_UI_TEST_HOME names a folder to build it in once and reuse on later runs (to
    iterate on the browser steps without the demo's minutes); by default a fresh one, shared
    by the workers of one `pytest -n` run."""
    import os

    import duckdb

    import fcntl

    reuse = os.environ.get("CHURN_UI_TEST_HOME")
    if reuse:
        folder = Path(reuse)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        # Under pytest -n the workers share one demo (built by the first one to get here).
        folder = tmp_path_factory.getbasetemp().parent / "ui-demo"
    else:
        folder = tmp_path_factory.mktemp("ui-demo")
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "home"
    with open(folder / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "built").exists():
            build_demo_home(home, customers=CUSTOMERS, months=MONTHS, log=folder / "demo.log")
            (folder / "built").touch()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        max_psi = dict(con.execute(
            "SELECT strftime(month, '%Y-%m-%d'), max_psi FROM monitoring.drift_summary ORDER BY month"
        ).fetchall())
    return {"home": home, "folder": folder, "max_psi": max_psi}


@pytest.fixture(scope="module")
def ui(demo):
    server = DagsterUI(demo["home"], log=demo["folder"] / "dagster-dev.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(ui):
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Screens:
    """Screenshots of one test, numbered in the order taken, in the test's tmp_path."""

    def __init__(self, page, folder: Path) -> None:
        self.page, self.folder, self.taken = page, folder, 0
        print(f"\nscreenshots: {folder}")

    def shot(self, name: str) -> Path:
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser, ui, tmp_path):
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=ui.url)
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # A new instance greets its first visitor with a "Join the Dagster community" dialog.
    page.add_locator_handler(
        page.get_by_role("dialog").get_by_role("button", name="Skip"), lambda skip: skip.click()
    )
    page.screens = Screens(page, tmp_path)
    try:
        yield page
    finally:
        try:
            page.screens.shot("end")
        finally:
            context.close()


def expect_no_error(page) -> None:
    expect(page.get_by_text(ERROR_TEXT)).to_have_count(0)
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


def metadata_value(page, key: str) -> str:
    """The value cell of metadata entry ``key`` in the table on screen."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
    expect(row).to_have_count(1)
    value = row.get_by_role("cell").nth(1)  # key, value, description
    expect(value).to_be_visible()
    return value.inner_text().strip()


def innermost(page, *inside):
    """The innermost element holding every locator in ``inside`` (the page's one row of a
    list whose rows have no role of their own)."""
    found = page.locator("div")
    for locator in inside:
        found = found.filter(has=locator)
    return found.last  # in document order an ancestor comes before its descendants


def test_asset_graph_loads_and_shows_the_groups_and_assets(page):
    page.goto("/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    graph_groups = page.locator("[class*=CollapsedGroupNode]")
    for group in ("raw", "staging", "features", "ml", "monitoring"):
        expect(graph_groups.filter(has=page.get_by_text(group, exact=True)).first).to_be_visible()
    expect_no_error(page)
    page.screens.shot("lineage-groups")
    # A user opens two groups in the sidebar and sees their assets ...
    for group in ("features", "monitoring"):
        innermost(page, page.get_by_title(group, exact=True), page.get_by_role("button", name="arrow_drop_down")
                  ).get_by_role("button", name="arrow_drop_down").click()
    for asset in ("customer_features", "training_set", "drift", "realised_performance"):
        expect(page.get_by_title(asset, exact=True)).to_be_visible()
    # ... and unfolds monitoring in the graph: drift is a node of it.
    graph_groups.filter(has=page.get_by_text("monitoring", exact=True)).get_by_role("img", name="unfold_more").click()
    expect(page.locator("[class*=AssetNode]").get_by_text("drift", exact=True).first).to_be_visible()
    expect_no_error(page)
    page.screens.shot("lineage-expanded")


def _open_partition(page, month: str) -> str:
    """On monitoring/drift's Partitions tab, filter the list to ``month``, click it, and
    return the max_psi the partition's metadata shows."""
    page.goto("/assets/monitoring/drift?view=partitions")
    page.get_by_placeholder("Filter by name").fill(month)
    page.get_by_text(month, exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"partition={month}"))
    expect(page.get_by_text("Metadata", exact=True)).to_be_visible()
    value = metadata_value(page, "max_psi")
    page.screens.shot(f"drift-partition-{month}")
    print(f"monitoring/drift partition {month}: the UI shows max_psi = {value}")
    return value


def test_a_drift_partition_shows_its_own_max_psi(page, demo):
    stored = demo["max_psi"]
    print(f"monitoring.drift_summary max_psi by month: {stored}")
    assert stored[MONTH_A] != pytest.approx(stored[MONTH_B]), "the demo's months should drift differently"
    shown = {month: float(_open_partition(page, month)) for month in (MONTH_A, MONTH_B)}
    expect_no_error(page)
    # Each partition's metadata is that month's, not the last month of the run.
    assert shown == {month: pytest.approx(stored[month], rel=1e-9) for month in shown}, (
        f"each drift partition should show its own month's max_psi from monitoring.drift_summary; "
        f"the UI shows {shown} (the same value in every partition is the last month's metadata of the run)"
    )
    assert shown[MONTH_A] != pytest.approx(shown[MONTH_B])


def test_a_failing_drift_check_shows_as_failed(page):
    from churn_assets.monitoring.drift import DRIFT_CHECKS

    page.goto("/assets/monitoring/drift?view=checks")
    expect(page.get_by_text(f"Checks ({len(DRIFT_CHECKS)})")).to_be_visible()

    def check_row(name: str):
        return innermost(page, page.get_by_title(name, exact=True), page.get_by_role("img"))

    failing, passing = check_row("max_psi"), check_row("drift_share")
    expect(failing).to_contain_text("Failed")
    # A failure's icon is its severity's: error (cancel) or warning (the demo's first months warn
    # only: no training month precedes them).
    failed_icon = re.compile(r"^(cancel|warning_outline)$")
    expect(failing.get_by_role("img", name=failed_icon)).to_be_visible()
    expect(passing).to_contain_text("Succeeded")
    expect(passing.get_by_role("img", name="check_circle")).to_be_visible()
    page.screens.shot("drift-checks")
    # Its detail: the latest evaluation failed, and says why.
    failing.click()
    expect(page.get_by_text(re.compile(r"largest PSI .* >= error level 0\.001"))).to_be_visible()
    result = innermost(page, page.get_by_text("Evaluation result", exact=True))
    expect(result).to_contain_text("Failed")
    expect(result.get_by_role("img", name=failed_icon)).to_be_visible()
    expect_no_error(page)
    page.screens.shot("drift-check-max_psi")


def test_an_evaluation_plot_renders_as_an_image(page):
    page.goto("/assets/ml/evaluation_report")
    row = page.locator("tr").filter(has=page.get_by_text("plot_roc_curve", exact=True))
    row.get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").get_by_role("img", name="roc curve")
    expect(image).to_be_visible()
    # Decoded (a broken data: URI has no natural size) and laid out with a real size.
    size = image.evaluate(
        "img => img.complete && [img.naturalWidth, img.naturalHeight,"
        " img.getBoundingClientRect().width, img.getBoundingClientRect().height]"
    )
    print(f"plot_roc_curve image: natural {size[0]}x{size[1]}, shown {size[2]:.0f}x{size[3]:.0f}")
    assert size and min(size) > 100
    expect_no_error(page)
    page.screens.shot("evaluation-roc-curve")
