"""A deterministic sample shop: orders, order lines, customers, products and fx rates.

Every value is derived from ``hash(seed, day, row, field)`` inside DuckDB, so the same seed gives
byte-identical files on any machine and 10M rows a day generate in seconds. The data is dirty on
purpose, at the known rates in :class:`Dirt`:

- exact duplicate rows (orders, order lines, customers, products);
- late-arriving orders: an order of day D-1 (with its lines) delivered in day D's files;
- updated orders (a second record with a later ``updated_at`` and a new status);
- nulls in non-key fields (ship_country, full_name, category);
- unknown currency codes on orders;
- negative quantities on order lines;
- inconsistent case and whitespace in country and email.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import filecmp
import glob
import hashlib
import os
import tempfile
import time

import duckdb

from ratatouille_assets.lakehouse import duck, s3

# (country, currency, USD per unit); the canonical values silver must converge to.
COUNTRIES = (("US", "USD"), ("DE", "EUR"), ("FR", "EUR"), ("GB", "GBP"), ("JP", "JPY"), ("CH", "CHF"))
BASE_RATES = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0068, "CHF": 1.12}
UNKNOWN_CURRENCIES = ("XXX", "BTC")
CATEGORIES = ("kitchen", "garden", "books", "toys", "sports", "beauty", "grocery", "electronics")
FILE_PREFIX = "sample-"


@dataclasses.dataclass(frozen=True)
class Dirt:
    """Rates at which dirt is planted (fractions of rows)."""

    duplicate: float = 0.02
    late: float = 0.03
    updated: float = 0.10
    cancelled_share_of_updates: float = 0.2
    null_field: float = 0.02
    unknown_currency: float = 0.01
    negative_quantity: float = 0.01
    messy_text: float = 0.10


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    start: dt.date = dt.date(2024, 1, 1)
    days: int = 7
    rows_per_day: int = 2000
    seed: int = 42
    files_per_day: int = 2
    dirt: Dirt = Dirt()

    @property
    def orders_per_day(self) -> int:
        return max(1, self.rows_per_day // 3)  # 1..5 lines per order, 3 on average

    @property
    def base_customers(self) -> int:
        return max(50, self.rows_per_day // 20)

    @property
    def new_customers_per_day(self) -> int:
        return max(5, self.base_customers // 50)

    @property
    def products(self) -> int:
        return min(5000, 100 + self.rows_per_day // 1000)

    def day(self, index: int) -> dt.date:
        return self.start + dt.timedelta(days=index)

    def customers_at(self, index: int) -> int:
        return self.base_customers + index * self.new_customers_per_day


@dataclasses.dataclass(frozen=True)
class GeneratedDay:
    day: dt.date
    rows: dict[str, int]


def _h(spec: SampleSpec, *parts: str, salt: str) -> str:
    """SQL for a pseudo-random non-negative BIGINT derived from the seed, SQL expressions and a salt."""
    return f"(hash({spec.seed}, {', '.join(parts)}, '{salt}') >> 1)::BIGINT"


def _u(spec: SampleSpec, *parts: str, salt: str) -> str:
    """SQL for a uniform [0, 1) value, like :func:`_h`."""
    return f"(({_h(spec, *parts, salt=salt)} % 1000000)::DOUBLE / 1000000.0)"


def _messy(spec: SampleSpec, expr: str, key: str, salt: str) -> str:
    """Lower-case, pad or mixed-case a text value for a share of rows."""
    u = _u(spec, key, salt=salt)
    r = spec.dirt.messy_text
    return (
        f"CASE WHEN {u} < {r / 3} THEN lower({expr}) "
        f"WHEN {u} < {2 * r / 3} THEN '  ' || {expr} || ' ' "
        f"WHEN {u} < {r} THEN ' ' || upper(substr({expr}, 1, 1)) || lower(substr({expr}, 2)) "
        f"ELSE {expr} END"
    )


def _values(rows: list[tuple]) -> str:
    return ", ".join("(" + ", ".join(repr(v) for v in row) + ")" for row in rows)


def _setup(conn: duckdb.DuckDBPyConnection, spec: SampleSpec) -> None:
    countries = _values([(i, c, cur) for i, (c, cur) in enumerate(COUNTRIES)])
    conn.execute(f"CREATE OR REPLACE TEMP TABLE countries AS SELECT * FROM (VALUES {countries}) t(idx, country, currency)")
    rates = _values(list(BASE_RATES.items()))
    conn.execute(f"CREATE OR REPLACE TEMP TABLE base_rates AS SELECT * FROM (VALUES {rates}) t(currency, usd_per_unit)")
    cats = _values([(i, c) for i, c in enumerate(CATEGORIES)])
    conn.execute(f"CREATE OR REPLACE TEMP TABLE categories AS SELECT * FROM (VALUES {cats}) t(idx, category)")
    # Products as first published (day 0): unit prices of order lines derive from these.
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE product_base AS
        SELECT range + 1 AS product_id,
               round(5 + ({_h(spec, 'range', salt='price')} % 20000) / 100.0, 2) AS list_price,
               (SELECT category FROM categories WHERE idx = {_h(spec, 'range', salt='cat')} % {len(CATEGORIES)}) AS category
        FROM range({spec.products})
        """
    )


def _orders_of(spec: SampleSpec, index: int) -> str:
    """The orders created on day ``index`` (before lateness), one row per order."""
    d = spec.day(index)
    k = str(index)
    cust = _h(spec, k, "i", salt='cust')
    return f"""
        SELECT {index} AS day_index, i,
               'O' || '{d:%Y%m%d}' || '-' || lpad(i::VARCHAR, 7, '0') AS order_id,
               1 + {cust} % {spec.customers_at(index)} AS customer_id,
               TIMESTAMP '{d} 00:00:00' + to_seconds(({_h(spec, k, 'i', salt='ts')} % 86400)::BIGINT) AS order_ts,
               {_u(spec, k, 'i', salt='late')} < {spec.dirt.late} AS is_late
        FROM range({spec.orders_per_day}) t(i)
    """


def _orders_in_file(spec: SampleSpec, index: int) -> str:
    """Orders delivered in day ``index``'s files: that day's on-time orders plus yesterday's late ones."""
    parts = [f"SELECT * FROM ({_orders_of(spec, index)}) WHERE NOT is_late"]
    if index > 0:
        parts.append(f"SELECT * FROM ({_orders_of(spec, index - 1)}) WHERE is_late")
    return " UNION ALL ".join(parts)


def _write(conn: duckdb.DuckDBPyConnection, query: str, folder: str, name: str, fmt: str, spec: SampleSpec, key: str) -> int:
    """Write one source's sample files of a day. A file whose bytes would not change is left alone
    (same mtime), so regenerating the same sample does not look like new data to the landing sensor."""
    os.makedirs(folder, exist_ok=True)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE out_rows AS {query}")
    total = conn.execute("SELECT count(*) FROM out_rows").fetchone()[0]
    ext = {"csv": "csv", "json": "jsonl", "parquet": "parquet"}[fmt]
    options = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json", "parquet": "FORMAT parquet"}[fmt]
    written = set()
    for part in range(spec.files_per_day):
        path = os.path.join(folder, f"{FILE_PREFIX}{name}-{part + 1:03d}.{ext}")
        tmp = os.path.join(folder, f".{FILE_PREFIX}{name}-{part + 1:03d}.tmp")
        conn.execute(
            f"COPY (SELECT * EXCLUDE (_part, _ord) FROM (SELECT *, {_h(spec, key, salt='file')} % {spec.files_per_day} AS _part, "
            f"row_number() OVER () AS _ord FROM out_rows) WHERE _part = {part} ORDER BY _ord) TO '{tmp}' ({options})"
        )
        if os.path.exists(path) and filecmp.cmp(path, tmp, shallow=False):
            os.remove(tmp)
        else:
            os.replace(tmp, path)
        written.add(path)
    for old in glob.glob(os.path.join(folder, FILE_PREFIX + "*")):
        if old not in written:
            os.remove(old)
    return total


def generate_day(conn: duckdb.DuckDBPyConnection, spec: SampleSpec, index: int, landing: str) -> GeneratedDay:
    d = spec.day(index)
    k = str(index)
    dirt = spec.dirt
    rows: dict[str, int] = {}
    folder = lambda source: os.path.join(landing, source, d.isoformat())  # noqa: E731

    # Orders: base records, status updates, exact duplicates.
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE day_orders AS
        SELECT o.*, c.country, c.currency AS home_currency,
               {_u(spec, 'o.order_id', salt='cur')} < {dirt.unknown_currency} AS bad_currency
        FROM ({_orders_in_file(spec, index)}) o
        JOIN countries c ON c.idx = {_h(spec, 'o.customer_id', salt='country')} % {len(COUNTRIES)}
    """)
    currency = (
        f"CASE WHEN bad_currency THEN (['{UNKNOWN_CURRENCIES[0]}', '{UNKNOWN_CURRENCIES[1]}'])"
        f"[1 + {_h(spec, 'order_id', salt='uc')} % 2] ELSE home_currency END"
    )
    ship_country = (
        f"CASE WHEN {_u(spec, 'order_id', salt='nullc')} < {dirt.null_field} THEN NULL "
        f"ELSE {_messy(spec, 'country', 'order_id', 'mc')} END"
    )
    base = f"""
        SELECT order_id, customer_id, strftime(order_ts, '%Y-%m-%dT%H:%M:%S') AS order_ts, 'placed' AS status,
               {currency} AS currency, {ship_country} AS ship_country,
               strftime(order_ts, '%Y-%m-%dT%H:%M:%S') AS updated_at
        FROM day_orders
    """
    update = f"""
        SELECT order_id, customer_id, strftime(order_ts, '%Y-%m-%dT%H:%M:%S'),
               CASE WHEN {_u(spec, 'order_id', salt='cancel')} < {dirt.cancelled_share_of_updates} THEN 'cancelled' ELSE 'shipped' END,
               {currency}, {ship_country},
               strftime(order_ts + to_seconds(3600 + ({_h(spec, 'order_id', salt='upd_ts')} % 172800)::BIGINT), '%Y-%m-%dT%H:%M:%S')
        FROM day_orders WHERE {_u(spec, 'order_id', salt='upd')} < {dirt.updated}
    """
    dups = f"SELECT * FROM ({base}) WHERE {_u(spec, 'order_id', salt='dup')} < {dirt.duplicate}"
    rows["orders"] = _write(conn, f"{base} UNION ALL {update} UNION ALL {dups} ORDER BY order_id, updated_at",
                            folder("orders"), f"orders-{d}", "json", spec, "order_id")

    # Order lines of the same orders (late orders bring their lines along).
    lines = f"""
        SELECT o.order_id, l.line_no::INTEGER AS line_no,
               1 + {_h(spec, 'o.order_id', 'l.line_no', salt='prod')} % {spec.products} AS product_id,
               (1 + {_h(spec, 'o.order_id', 'l.line_no', salt='qty')} % 4)::INTEGER
                 * CASE WHEN {_u(spec, 'o.order_id', 'l.line_no', salt='neg')} < {dirt.negative_quantity} THEN -1 ELSE 1 END AS quantity,
               o.order_ts, o.home_currency
        FROM day_orders o, range(1, 2 + {_h(spec, 'o.order_id', salt='nlines')} % 5) l(line_no)
    """
    items = f"""
        SELECT x.order_id, x.line_no, x.product_id, x.quantity,
               round(p.list_price / r.usd_per_unit, 2)::DECIMAL(12,2) AS unit_price, x.order_ts
        FROM ({lines}) x JOIN product_base p USING (product_id) JOIN base_rates r ON r.currency = x.home_currency
    """
    item_dups = f"SELECT * FROM ({items}) WHERE {_u(spec, 'order_id', 'line_no', salt='dup')} < {dirt.duplicate}"
    rows["order_items"] = _write(conn, f"{items} UNION ALL {item_dups} ORDER BY order_id, line_no",
                                 folder("order_items"), f"order_items-{d}", "parquet", spec, "order_id")

    # Customers: the initial base on day 0, then the day's sign-ups and a few changed e-mails.
    first_new = 1 if index == 0 else spec.customers_at(index - 1) + 1
    last_new = spec.customers_at(index)
    customers = f"""
        SELECT id AS customer_id,
               'user' || id || CASE WHEN changed THEN '.' || {index} ELSE '' END || '@example.com' AS email0,
               CASE WHEN {_u(spec, k, 'id', salt='nulln')} < {dirt.null_field} THEN NULL ELSE 'Customer ' || id END AS full_name,
               c.country AS country0,
               CASE WHEN changed THEN DATE '{spec.start}' + ({_h(spec, 'id', salt='signup')} % {max(index, 1)})::INTEGER
                    ELSE DATE '{d}' END AS signup_date,
               strftime(TIMESTAMP '{d} 00:00:00' + to_seconds(({_h(spec, k, 'id', salt='cts')} % 86400)::BIGINT), '%Y-%m-%d %H:%M:%S') AS updated_at
        FROM (
            SELECT range AS id, false AS changed FROM range({first_new}, {last_new + 1})
            UNION ALL
            SELECT range, true FROM range(1, {first_new})
            WHERE {index} > 0 AND {_u(spec, k, 'range', salt='chg')} < 0.01
        ) ids
        JOIN countries c ON c.idx = {_h(spec, 'id', salt='country')} % {len(COUNTRIES)}
    """
    customers = f"""
        SELECT customer_id,
               CASE WHEN {_u(spec, k, 'customer_id', salt='me')} < {dirt.messy_text}
                    THEN ' ' || upper(email0) || ' ' ELSE email0 END AS email,
               full_name, {_messy(spec, 'country0', 'customer_id', 'cc')} AS country, signup_date, updated_at
        FROM ({customers})
    """
    cust_dups = f"SELECT * FROM ({customers}) WHERE {_u(spec, k, 'customer_id', salt='dup')} < {dirt.duplicate}"
    rows["customers"] = _write(conn, f"{customers} UNION ALL {cust_dups} ORDER BY customer_id",
                               folder("customers"), f"customers-{d}", "csv", spec, "customer_id")

    # Products: the catalogue on day 0, then price changes of about 2% of products.
    products = f"""
        SELECT p.product_id, 'Product ' || p.product_id AS name,
               CASE WHEN {_u(spec, k, 'p.product_id', salt='nullcat')} < {dirt.null_field} THEN NULL ELSE p.category END AS category,
               CASE WHEN {index} = 0 THEN p.list_price
                    ELSE round(p.list_price * (0.9 + {_u(spec, k, 'p.product_id', salt='reprice')} * 0.2), 2) END::DECIMAL(12,2) AS list_price,
               strftime(TIMESTAMP '{d} 00:00:00' + to_seconds(({_h(spec, k, 'p.product_id', salt='pts')} % 86400)::BIGINT), '%Y-%m-%d %H:%M:%S') AS updated_at
        FROM product_base p
        WHERE {index} = 0 OR {_u(spec, k, 'p.product_id', salt='chg')} < 0.02
    """
    prod_dups = f"SELECT * FROM ({products}) WHERE {_u(spec, k, 'product_id', salt='dup')} < {dirt.duplicate}"
    rows["products"] = _write(conn, f"{products} UNION ALL {prod_dups} ORDER BY product_id",
                              folder("products"), f"products-{d}", "csv", spec, "product_id")

    # FX: one rate per currency per day, wobbling +-1% around the base.
    fx = f"""
        SELECT DATE '{d}' AS rate_date, currency,
               round(usd_per_unit * (0.99 + {_u(spec, k, 'currency', salt='fx')} * 0.02), 8)::DECIMAL(18,8) AS usd_per_unit
        FROM base_rates ORDER BY currency
    """
    rows["fx_rates"] = _write(conn, fx, folder("fx_rates"), f"fx_rates-{d}", "csv",
                              dataclasses.replace(spec, files_per_day=1), "currency")
    return GeneratedDay(day=d, rows=rows)


def generate(spec: SampleSpec, landing: str) -> list[GeneratedDay]:
    """Write ``spec.days`` days of landing files under ``landing`` (replacing earlier sample files).

    On S3 the files are written to a temporary folder first, then uploaded; earlier sample files
    of the same days are deleted first, the user's own files are left alone.
    """
    if s3.is_s3(landing):
        with tempfile.TemporaryDirectory(prefix="ratatouille-sample-") as folder:
            days = generate(spec, folder)
            client = s3.client()
            for dirpath, _dirs, files in os.walk(folder):
                relative = os.path.relpath(dirpath, folder)
                if relative == ".":
                    continue
                prefix = s3.join(landing, relative.replace(os.sep, "/"))
                existing = {o.uri: o.etag for o in s3.list_objects(client, s3.join(prefix, FILE_PREFIX))}
                fresh = {s3.join(prefix, f): os.path.join(dirpath, f) for f in files}
                s3.delete(client, [u for u in existing if u not in fresh])
                for uri, path in sorted(fresh.items()):
                    # One PUT: the ETag is the MD5 of the bytes; an unchanged file is not re-sent.
                    if existing.get(uri) != _md5(path):
                        s3.copy(client, path, uri)
            return days
    conn = duck.connect()
    try:
        _setup(conn, spec)
        return [generate_day(conn, spec, i, landing) for i in range(spec.days)]
    finally:
        conn.close()


def _md5(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read(), usedforsecurity=False).hexdigest()


def main(argv: list[str] | None = None) -> int:
    from ratatouille_assets.settings import get_settings

    parser = argparse.ArgumentParser(prog="rat generate", description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=SampleSpec.start)
    parser.add_argument("--days", type=int, default=SampleSpec.days)
    parser.add_argument("--rows-per-day", type=int, default=SampleSpec.rows_per_day, help="order lines per day")
    parser.add_argument("--seed", type=int, default=SampleSpec.seed)
    parser.add_argument("--landing", default=None, help="landing root (default: the configured landing zone)")
    args = parser.parse_args(argv)
    landing = args.landing or get_settings().landing
    spec = SampleSpec(start=args.start, days=args.days, rows_per_day=args.rows_per_day, seed=args.seed)
    t0 = time.perf_counter()
    days = generate(spec, landing)
    total = sum(sum(d.rows.values()) for d in days)
    print(f"generated {total:,} rows over {len(days)} days into {landing} in {time.perf_counter() - t0:.1f}s")
    return 0
