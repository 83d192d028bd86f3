"""The Dagster UI in a real browser, on the demo lakehouse: the lineage shows every layer with its
assets, and a partitioned gold asset shows the demo days materialized with their Iceberg snapshot.

Assertions are on what the page renders, after waiting for it (a 200 with a spinner or an error
page fails). Every test leaves a full-page screenshot in ``test-artifacts/ui/``, pass or fail.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ratatouille_assets.definitions import build_definitions
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.settings import get_settings
from tests.e2e.conftest import DEMO_DAYS
from tests.e2e.dagster_dev import ARTIFACTS, DagsterDev

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (`make browser`): Playwright's own download is not reachable
# Headless, unsandboxed (root in a VM), no GPU, and no background calls to Google services. Playwright
# adds --headless and a fresh --user-data-dir itself.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = ARTIFACTS / "ui"
LAYERS = ("landing", "bronze", "silver", "gold")
TIMEOUT_MS = 30_000

# The UI keeps these in localStorage. The first is the "Join the Dagster community" dialog shown once
# on localhost, which would cover the page; the second lays the global graph out so that all four
# layers fit the width of the screen (horizontally it is zoomed to a corner, and nodes off-screen
# are not rendered at all).
SKIP_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'))"
VERTICAL_GRAPH = "window.localStorage.setItem('asset-graph-direction', JSON.stringify('vertical'))"

# Every <foreignObject> of the graph SVG with its label (first line of its text): one per expanded
# group (labelled with the group name) and one per asset node, in graph coordinates.
def is_label_of(label: str, name: str) -> bool:
    """The lineage graph shows a long name middle-truncated to its box ("dim_custo…_history")."""
    head, ellipsis, tail = label.partition("…")
    return label == name or bool(ellipsis) and name.startswith(head) and name.endswith(tail) and len(head + tail) < len(name)


def shown_as(name: str) -> re.Pattern:
    """The name, or its middle-truncated form (a prefix, "…", a suffix)."""
    if len(name) <= 8:
        return re.compile("^" + re.escape(name) + "$")
    return re.compile("^" + re.escape(name[:4]) + "(" + re.escape(name[4:-4]) + "|.*….*)" + re.escape(name[-4:]) + "$")


GRAPH_BOXES_JS = """els => els.map(e => ({
    x: +e.getAttribute('x'), y: +e.getAttribute('y'),
    width: +e.getAttribute('width'), height: +e.getAttribute('height'),
    label: (e.firstElementChild?.innerText ?? '').trim().split('\\n')[0],
}))"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Checked before the demo runs, so a missing browser fails in a second, not after a minute."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium)", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path, dagster_dev_demo: DagsterDev) -> Iterator[Browser]:
    """Launched once the demo has run: Playwright's sync API keeps an asyncio loop running in this
    thread, and the demo's in-process Dagster runs should not execute under it."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, dagster_dev_demo: DagsterDev, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context on the demo server (relative URLs); screenshots itself at the end."""
    context = browser.new_context(base_url=dagster_dev_demo.url, viewport={"width": 1920, "height": 1080})
    context.add_init_script(SKIP_COMMUNITY_DIALOG)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()


def assets_by_group() -> dict[str, set[str]]:
    """What the definitions declare, independent of the UI: group -> asset names."""
    graph = build_definitions().resolve_asset_graph()
    groups: dict[str, set[str]] = defaultdict(set)
    for key in graph.get_all_asset_keys():
        groups[graph.get(key).group_name].add(key.path[-1])
    return dict(groups)


def inside(box: dict, group: dict) -> bool:
    return (group["x"] <= box["x"] and box["x"] + box["width"] <= group["x"] + group["width"]
            and group["y"] <= box["y"] and box["y"] + box["height"] <= group["y"] + group["height"])


def test_global_lineage_shows_every_layer_with_its_assets(page: Page) -> None:
    expected = assets_by_group()
    assert set(expected) == set(LAYERS)
    page.add_init_script(VERTICAL_GRAPH)
    # The group ids the UI itself puts in the URL on "Expand all groups" (⌥E).
    expanded = ",".join(f"global@global:{layer}" for layer in LAYERS)
    page.goto(f"/asset-groups?expanded={quote(expanded)}")

    expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=TIMEOUT_MS)
    graph = page.locator("svg foreignObject")
    names = set().union(*expected.values())
    for name in names:
        expect(graph.get_by_text(shown_as(name)).first).to_be_visible(timeout=TIMEOUT_MS)

    boxes = graph.evaluate_all(GRAPH_BOXES_JS)
    groups = [b for b in boxes if b["label"] in LAYERS]
    rendered: dict[str | None, set[str]] = defaultdict(set)
    for node in (b for b in boxes if b["label"] and b["label"] not in LAYERS):
        layer = next((g["label"] for g in groups if inside(node, g)), None)
        rendered[layer].add(next((n for n in names if is_label_of(node["label"], n)), node["label"]))
    assert dict(rendered) == expected
    assert {"kpi_daily_sales", "fct_order_lines", "dim_customers"} <= rendered["gold"]
    assert "orders" in rendered["landing"] & rendered["bronze"] & rendered["silver"]


def test_gold_lineage_shows_its_assets_checked_and_their_silver_inputs(page: Page) -> None:
    graph = build_definitions().resolve_asset_graph()
    gold = {key for key in graph.get_all_asset_keys() if graph.get(key).group_name == "gold"}
    inputs = {parent.path[-1] for key in gold for parent in graph.get(key).parent_keys
              if graph.get(parent).group_name != "gold"}
    assert {"orders", "order_items"} <= inputs
    page.goto("/locations/ratatouille/asset-groups/gold")

    expect(page.get_by_text("Asset Group in")).to_be_visible(timeout=TIMEOUT_MS)
    nodes = page.locator("svg foreignObject")
    for key in gold:
        node = nodes.filter(has=page.get_by_text(key.path[-1], exact=True))
        # Materialized by the demo, with its Soda checks and dbt tests run and passed.
        expect(node.first).to_contain_text(re.compile(r"Latest event\s*\S.*ago"), timeout=TIMEOUT_MS)
        expect(node.first).to_contain_text(re.compile(r"Asset checks\s*[1-9]\d* / \d+ Passed"), timeout=TIMEOUT_MS)
    for name in inputs:
        expect(nodes.get_by_text(name, exact=True).first).to_be_visible(timeout=TIMEOUT_MS)


def test_partitions_page_shows_the_demo_days_materialized(page: Page) -> None:
    day = DEMO_DAYS[1]
    snapshot_id = load_catalog(get_settings()).load_table("gold.kpi_daily_sales").current_snapshot().snapshot_id
    # Only materialized partitions in the list, and one day's detail on the right.
    page.goto(f"/assets/gold/kpi_daily_sales?view=partitions&status=MATERIALIZED&partition={day}")

    expect(page.get_by_text(f"Materialized ({len(DEMO_DAYS)})", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    for d in DEMO_DAYS:
        expect(page.locator(f'[title="{d}"]').first).to_be_visible(timeout=TIMEOUT_MS)
    titles = page.locator("[title]").evaluate_all("els => els.map(e => e.title)")
    assert {t for t in titles if re.fullmatch(r"\d{4}-\d\d-\d\d", t)} == set(DEMO_DAYS)

    # The day's latest materialization carries the Iceberg snapshot gold is at now.
    expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=TIMEOUT_MS)
    snapshot_row = page.locator("tr", has=page.get_by_text("iceberg/snapshot_id", exact=True))
    expect(snapshot_row).to_contain_text(str(snapshot_id), timeout=TIMEOUT_MS)
    window_row = page.locator("tr", has=page.get_by_text("iceberg/window", exact=True))
    expect(window_row).to_contain_text(f"order_date:{DEMO_DAYS[0]}..{DEMO_DAYS[-1]}", timeout=TIMEOUT_MS)


def test_rat_materialize_launches_a_day_through_the_running_webserver(dagster_dev_demo: DagsterDev) -> None:
    """The SDK's materialize goes through the server like the UI's Materialize (a backfill the
    daemon runs); last in this module, so the pages above show the demo's own materializations."""
    from ratatouille_assets.client import wait_for_backfill
    from ratatouille_assets.sdk import Lakehouse, RatError

    rat = Lakehouse(get_settings())
    day = DEMO_DAYS[-1]
    kpi = f"SELECT * FROM gold.kpi_daily_sales WHERE order_date = DATE '{day}' ORDER BY ALL"
    rows = rat.sql(kpi).fetchall()
    before = load_catalog(get_settings()).load_table("gold.kpi_daily_sales").current_snapshot().snapshot_id
    with pytest.raises(RatError, match="gold.kpi_daily_sales is daily: give partition="):
        rat.materialize(["gold.kpi_daily_sales"], url=dagster_dev_demo.url)
    with pytest.raises(RatError, match="no asset gold.nothing"):
        rat.materialize(["gold.nothing"], partition=day, url=dagster_dev_demo.url)

    backfill = rat.materialize(["gold.kpi_daily_sales"], partition=day, url=dagster_dev_demo.url)
    status = wait_for_backfill(dagster_dev_demo.url, backfill, timeout=600)
    assert status["status"] == "COMPLETED_SUCCESS", status
    snapshot = load_catalog(get_settings()).load_table("gold.kpi_daily_sales").current_snapshot()
    props = snapshot.summary.additional_properties
    assert snapshot.snapshot_id != before
    assert props["ratatouille.run-id"] in {run["runId"] for run in status["runs"]}
    assert props["ratatouille.window"] == f"order_date:{day}..{day}"
    assert rat.sql(kpi).fetchall() == rows  # the same inputs, the same day
    rat.close()
