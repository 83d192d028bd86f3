"""The starter notebook (docs/notebooks/gold.ipynb, what the compose `jupyter` service opens) runs
top to bottom in a real Jupyter kernel against a lakehouse, and shows what gold holds."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "notebooks" / "gold.ipynb"
# JupyterLab's own environment (`make notebook-env`): the project plus the `notebook` extra.
JUPYTER = ROOT / ".ratatouille" / "notebook-venv" / "bin" / "jupyter"


@pytest.mark.slow
def test_the_starter_notebook_runs_and_shows_gold(settings):
    days = [dt.date(2025, 4, 1) + dt.timedelta(days=i) for i in range(4)]
    rows = [{"order_date": d, "country": c, "reporting_currency": "USD", "orders": 3 + i + j,
             "order_lines": 5 + i, "units": decimal.Decimal(9 + i), "revenue": decimal.Decimal(f"{100 + 10 * i + j}.25"),
             "avg_order_value": decimal.Decimal("10.00")}
            for i, d in enumerate(days) for j, c in enumerate(["NO", "PT", "KR"])]
    schema = pa.schema([("order_date", pa.date32()), ("country", pa.string()), ("reporting_currency", pa.string()),
                        ("orders", pa.int64()), ("order_lines", pa.int64()), ("units", pa.decimal128(38, 0)),
                        ("revenue", pa.decimal128(18, 2)), ("avg_order_value", pa.decimal128(18, 2))])
    write_window(load_catalog(settings), "gold.kpi_daily_sales", pa.Table.from_pylist(rows, schema),
                 window=Window("order_date", days[0], days[-1]), run_id="notebook-test")

    if not JUPYTER.exists():
        pytest.fail(f"{JUPYTER} is missing: run `make notebook-env` (make test does)")
    executed = settings.home / "gold.ipynb"
    # The kernel inherits this process's environment: the test's RATATOUILLE_* settings.
    run = subprocess.run([str(JUPYTER), "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=300",
                          "--output", str(executed), str(NOTEBOOK)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]

    code = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    # No error, and no warning printed into the notebook either.
    assert [(o["output_type"], _text(o.get("text")) or o.get("evalue")) for c in code for o in c["outputs"]
            if o["output_type"] in ("stream", "error")] == []
    assert "'gold.kpi_daily_sales'" in _text(code[0]["outputs"][0]["data"]["text/plain"])
    daily = _text(code[1]["outputs"][0]["data"]["text/plain"])
    for d in days:  # each day's revenue, summed over its countries here
        assert f"{sum(r['revenue'] for r in rows if r['order_date'] == d)}" in daily, (d, daily)
    assert any("image/png" in o.get("data", {}) for o in code[2]["outputs"]), "the revenue plot was not drawn"
    by_country = _text(code[3]["outputs"][0]["data"]["text/plain"]).splitlines()
    assert [line.split()[1] for line in by_country[1:]] == ["KR", "PT", "NO"]  # by revenue, descending
    assert "order_date:2025-04-01..2025-04-04" in _text(code[4]["outputs"][0]["data"]["text/plain"])  # the commit's window


def _text(value) -> str | None:
    """An output's text: the .ipynb file keeps multi-line text as a list of lines."""
    return "".join(value) if isinstance(value, list) else value
