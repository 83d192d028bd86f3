"""The gold KPIs computed straight from the landing files with plain DuckDB SQL.

Written separately from the dbt models (different SQL, same documented cleaning rules), so that a
mistake in either shows up as a difference:
- an order is its latest record by updated_at; a line is its last delivered record;
- orders with an unknown currency or no customer are dropped, lines with quantity <= 0 too;
- country is trimmed and upper-cased, missing -> 'UNKNOWN'; cancelled orders do not count;
- amounts are converted at the fx rate of the order date, rounded to cents per line.
"""

from __future__ import annotations

import datetime as dt

import duckdb

ACCEPTED = ("USD", "EUR", "GBP", "JPY", "CHF")


def landing_views(conn: duckdb.DuckDBPyConnection, landing: str) -> None:
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW raw_orders AS
        SELECT * FROM read_json('{landing}/orders/*/*.jsonl', format = 'newline_delimited', filename = true,
            columns = {{order_id: 'VARCHAR', customer_id: 'BIGINT', order_ts: 'TIMESTAMP', status: 'VARCHAR',
                        currency: 'VARCHAR', ship_country: 'VARCHAR', updated_at: 'TIMESTAMP'}})
    """)
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW raw_items AS
        SELECT * FROM read_parquet('{landing}/order_items/*/*.parquet', filename = true)
    """)
    conn.execute(f"""
        CREATE OR REPLACE TEMP VIEW raw_fx AS
        SELECT rate_date::DATE AS rate_date, currency, usd_per_unit::DECIMAL(18, 8) AS usd_per_unit, filename
        FROM read_csv('{landing}/fx_rates/*/*.csv', header = true, filename = true)
    """)
    conn.execute("""
        CREATE OR REPLACE TEMP VIEW clean_orders AS
        SELECT trim(order_id) AS order_id,
               arg_max(customer_id, (coalesce(updated_at, order_ts), filename)) AS customer_id,
               arg_max(order_ts::DATE, (coalesce(updated_at, order_ts), filename)) AS order_date,
               arg_max(coalesce(lower(trim(status)), 'placed'), (coalesce(updated_at, order_ts), filename)) AS status,
               arg_max(upper(trim(currency)), (coalesce(updated_at, order_ts), filename)) AS currency,
               arg_max(coalesce(nullif(upper(trim(ship_country)), ''), 'UNKNOWN'), (coalesce(updated_at, order_ts), filename)) AS country
        FROM raw_orders WHERE order_id IS NOT NULL GROUP BY 1
    """)
    conn.execute("""
        CREATE OR REPLACE TEMP VIEW clean_items AS
        SELECT trim(order_id) AS order_id, line_no,
               arg_max(quantity, filename) AS quantity, arg_max(unit_price, filename) AS unit_price
        FROM raw_items GROUP BY 1, 2
    """)
    conn.execute("""
        CREATE OR REPLACE TEMP VIEW clean_fx AS
        SELECT rate_date, upper(trim(currency)) AS currency, arg_max(usd_per_unit, filename) AS usd_per_unit
        FROM raw_fx GROUP BY 1, 2
    """)


def kpi_daily_sales(conn: duckdb.DuckDBPyConnection, landing: str, day: dt.date, reporting: str = "USD") -> list[tuple]:
    """(order_date, country, orders, order_lines, units, revenue, avg_order_value) sorted by country."""
    return kpi_daily_sales_range(conn, landing, day, day, reporting)


def kpi_daily_sales_range(
    conn: duckdb.DuckDBPyConnection, landing: str, first: dt.date, last: dt.date, reporting: str = "USD"
) -> list[tuple]:
    """The KPI rows of every day in ``first``..``last``, sorted by day and country."""
    landing_views(conn, landing)
    accepted = ", ".join(f"'{c}'" for c in ACCEPTED)
    return conn.execute(f"""
        WITH priced AS (
            SELECT o.order_date, o.country, o.order_id, i.quantity,
                   round(i.quantity * i.unit_price * fx.usd_per_unit / rep.usd_per_unit, 2)::DECIMAL(18, 2) AS amount
            FROM clean_orders o
            JOIN clean_items i ON i.order_id = o.order_id
            JOIN clean_fx fx ON fx.rate_date = o.order_date AND fx.currency = o.currency
            JOIN clean_fx rep ON rep.rate_date = o.order_date AND rep.currency = '{reporting}'
            WHERE o.order_date BETWEEN DATE '{first}' AND DATE '{last}'
              AND o.currency IN ({accepted}) AND o.customer_id IS NOT NULL
              AND o.status <> 'cancelled'
              AND i.quantity > 0 AND i.unit_price >= 0
        )
        SELECT order_date, country, count(DISTINCT order_id), count(*), sum(quantity),
               sum(amount)::DECIMAL(18, 2), round(sum(amount) / count(DISTINCT order_id), 2)::DECIMAL(18, 2)
        FROM priced GROUP BY ALL ORDER BY order_date, country
    """).fetchall()
