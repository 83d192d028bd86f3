"""Dashboard queries over gold, read from Iceberg through DuckDB, as a BI tool would send them."""

from __future__ import annotations

import statistics
import time

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.settings import Settings

KPI = "gold.kpi_daily_sales"
DASHBOARD = {
    "revenue_by_day_country": "SELECT order_date, country, sum(revenue) AS revenue, sum(orders) AS orders, "
                              "sum(units) AS units FROM kpi GROUP BY ALL ORDER BY ALL",
    "revenue_by_month_country": "SELECT date_trunc('month', order_date) AS month, country, sum(revenue) AS revenue "
                                "FROM kpi GROUP BY ALL ORDER BY ALL",
    "country_totals": "SELECT country, sum(revenue) AS revenue, sum(orders) AS orders, "
                      "sum(revenue) / sum(orders) AS avg_order_value FROM kpi GROUP BY ALL ORDER BY revenue DESC",
    "last_30_days": "SELECT order_date, sum(revenue) AS revenue FROM kpi "
                    "WHERE order_date > (SELECT max(order_date) FROM kpi) - INTERVAL 30 DAY GROUP BY ALL ORDER BY ALL",
    "latest_day": "SELECT * FROM kpi WHERE order_date = (SELECT max(order_date) FROM kpi) ORDER BY country",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def dashboard_latency(settings: Settings, repetitions: int = 10) -> dict:
    """p50/p95 (ms) of every dashboard query over the whole history; each reads the current snapshot."""
    location = load_catalog(settings).load_table(KPI).metadata_location.replace("'", "''")
    conn = duck.connect(settings)
    timings: dict[str, list[float]] = {}
    try:
        kpi = f"(SELECT * FROM iceberg_scan('{location}')) kpi"
        for name, sql in DASHBOARD.items():
            query = sql.replace("FROM kpi", f"FROM {kpi}")
            conn.execute(query).fetchall()  # warm-up: the first query pays for loading the extension code
            timings[name] = []
            for _ in range(repetitions):
                t = time.perf_counter()
                conn.execute(query).fetchall()
                timings[name].append((time.perf_counter() - t) * 1000)
        rows = conn.execute(f"SELECT count(*), min(order_date), max(order_date) FROM {kpi}").fetchone()
    finally:
        conn.close()
    every = [v for vs in timings.values() for v in vs]
    return {
        "kpi_rows": rows[0], "days": f"{rows[1]}..{rows[2]}",
        "p50_ms": statistics.median(every), "p95_ms": percentile(every, 0.95),
        "per_query_p50_ms": {k: statistics.median(v) for k, v in timings.items()},
    }
