"""Merge (SCD1 upsert) of a model's result into the rows its table holds, in DuckDB SQL.

The model's result is the changes: a row whose ``unique_key`` the table has replaces that row
(only ``update_columns`` of it, when given), a new key is inserted, a row whose ``delete_column``
is true removes its key. Every other row of the table stays as it was. The merged table is one
SQL relation (one full outer join, no Python per row), which the caller streams into the
write path as the table's new content, committed only onto the head it was computed from.

Refused, with the count and a few keys: NULL keys and duplicate keys in the changes (which row
would win?), duplicate keys in the table (an update would multiply them).

A partitioned table (the model has ``partition_by``) is merged partition by partition: only the
days the merge touches are read, merged and rewritten (:func:`touched_days`: the days of the
changes, and the days of the table's rows of the keys they name, since an update may move a row
to another day); every other day's files stay as they are. Keys are unique across the days
rewritten, which hold every row of every key the changes name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from duckdb import DuckDBPyConnection

from ratatouille_assets.lakehouse.duck import quote_ident as q
from ratatouille_assets.lakehouse.errors import LakehouseError

STRATEGIES = ("overwrite_window", "replace", "append", "merge", "scd2")
SAMPLE_KEYS = 5


class MergeError(LakehouseError):
    """The changes cannot be merged as they are; the message says which rows and what to do."""


@dataclasses.dataclass(frozen=True)
class MergeSpec:
    unique_key: tuple[str, ...]
    update_columns: tuple[str, ...] | None = None
    delete_column: str | None = None

    @classmethod
    def from_config(cls, unique_key, update_columns=None, delete_column=None) -> MergeSpec:
        keys = (unique_key,) if isinstance(unique_key, str) else tuple(unique_key or ())
        updates = None if update_columns is None else ((update_columns,) if isinstance(update_columns, str) else tuple(update_columns))
        return cls(keys, updates, delete_column or None)


@dataclasses.dataclass(frozen=True)
class MergePlan:
    sql: str  # the merged table
    inserted: int
    updated: int
    deleted: int
    kept: int  # rows of the table the changes did not touch
    days: int | None = None  # a partitioned table: the days rewritten

    def properties(self) -> dict[str, str]:
        props = {"ratatouille.merge.inserted": str(self.inserted), "ratatouille.merge.updated": str(self.updated),
                 "ratatouille.merge.deleted": str(self.deleted), "ratatouille.merge.kept": str(self.kept)}
        if self.days is not None:
            props["ratatouille.merge.days"] = str(self.days)
        return props


def columns(conn: DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}


def touched_days(conn: DuckDBPyConnection, changes: str, target: str | None, spec: MergeSpec, column: str) -> list[dt.date]:
    """The days (of ``column``, a DATE or the UTC day of a TIMESTAMP) a merge of ``changes`` into
    ``target`` rewrites: the days of the changes' rows, and the days of the table's rows whose keys
    the changes name. Reads the keys and ``column`` of the table, nothing else."""
    src = columns(conn, changes)
    if column not in src:
        raise MergeError(f"partition_by '{column}' is not a column of the model's result (columns: {', '.join(src)})")
    day = f"CAST({q(column)} AS DATE)"
    days = {row[0] for row in conn.execute(f"SELECT DISTINCT {day} FROM {changes} WHERE {q(column)} IS NOT NULL").fetchall()}
    if target:
        keys = spec.unique_key
        on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in keys)
        key_list = ", ".join(q(k) for k in keys)
        # Two queries, not a UNION of both in one plan (see plan_merge on DuckDB's hang).
        days |= {row[0] for row in conn.execute(
            f"SELECT DISTINCT CAST(t.{q(column)} AS DATE) FROM (SELECT {key_list}, {q(column)} FROM {target}) t "
            f"SEMI JOIN (SELECT {key_list} FROM {changes}) s ON {on} WHERE t.{q(column)} IS NOT NULL"
        ).fetchall()}
    return sorted(days)


def plan_merge(conn: DuckDBPyConnection, changes: str, target: str | None, spec: MergeSpec,
               table_rows: int | None = None, days: int | None = None) -> MergePlan:
    """The merged table's SQL over ``changes`` (a relation of good rows) and ``target`` (the table as
    read, or None when it does not exist yet), with the counts of what the merge does.

    A partitioned merge passes as ``target`` the table's rows on the days it rewrites, with
    ``table_rows`` (the whole table's) and ``days`` (how many) for the counts."""
    src = columns(conn, changes)
    tgt = columns(conn, target) if target else {}
    _check_columns(spec, src, tgt)
    keys = spec.unique_key
    _refuse_bad_keys(conn, changes, keys, "the model's result",
                     "Deduplicate in the model (one row per key: the latest, e.g. latest_by_key) or widen unique_key.")
    if target:
        _refuse_bad_keys(conn, target, keys, "the table",
                         "Rebuild it with a full refresh from a result with one row per key.", nulls=False)
    delete = spec.delete_column
    out = [c for c in src if c != delete] + [c for c in tgt if c not in src]
    is_deleted = f"coalesce(s.{q(delete)}, false)" if delete else "false"
    if not target:
        sql = f"SELECT * EXCLUDE ({q(delete)}) FROM {changes} s WHERE NOT {is_deleted}" if delete else f"SELECT * FROM {changes}"
        inserted = conn.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        return MergePlan(sql, inserted, 0, 0, table_rows or 0, days)
    on = " AND ".join(f"s.{q(k)} = t.{q(k)}" for k in keys)
    keep_old = set() if spec.update_columns is None else {c for c in src if c in tgt and c not in keys and c not in spec.update_columns}

    def merged(c: str) -> str:
        if c not in src:
            return f"t.{q(c)}"
        if c not in tgt:
            return f"s.{q(c)}"
        if c in keep_old:
            return f"CASE WHEN t.__rat_hit THEN t.{q(c)} ELSE s.{q(c)} END"
        return f"CASE WHEN s.__rat_new THEN s.{q(c)} ELSE t.{q(c)} END"

    # One full outer join: a change row wins over its key's table row, a table row without a
    # change is kept. (Not a join UNION ALL an anti-join of the same inputs: DuckDB 1.5 parks all
    # its threads on that plan at a few million rows and never returns, duckdb/duckdb#24961.)
    sql = (f"SELECT {', '.join(f'{merged(c)} AS {q(c)}' for c in out)} "
           f"FROM (SELECT *, true AS __rat_new FROM {changes}) s "
           f"FULL OUTER JOIN (SELECT *, true AS __rat_hit FROM {target}) t ON {on} WHERE NOT {is_deleted}")
    counts = conn.execute(
        f"SELECT count(*) FILTER (WHERE t.__rat_hit IS NULL AND NOT {is_deleted}), "
        f"count(*) FILTER (WHERE t.__rat_hit AND NOT {is_deleted}), count(*) FILTER (WHERE t.__rat_hit AND {is_deleted}) "
        f"FROM {changes} s LEFT JOIN (SELECT {', '.join(f'{q(k)}' for k in keys)}, true AS __rat_hit FROM {target}) t ON {on}"
    ).fetchone()
    total = table_rows if table_rows is not None else conn.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
    inserted, updated, deleted = (int(c) for c in counts)
    return MergePlan(sql, inserted, updated, deleted, total - updated - deleted, days)


def _check_columns(spec: MergeSpec, src: dict[str, str], tgt: dict[str, str]) -> None:
    problems = []
    for k in spec.unique_key:
        if k not in src:
            problems.append(f"unique_key column '{k}' is not in the model's result (columns: {', '.join(src)})")
        elif tgt and k not in tgt:
            problems.append(f"unique_key column '{k}' is not in the table (columns: {', '.join(tgt)}): "
                            "rebuild it with a full refresh")
    for c in spec.update_columns or ():
        if c not in src:
            problems.append(f"merge_update_columns names '{c}', which is not in the model's result")
    if spec.delete_column:
        kind = src.get(spec.delete_column)
        if kind is None:
            problems.append(f"merge_delete_column '{spec.delete_column}' is not in the model's result")
        elif kind.upper() != "BOOLEAN":
            problems.append(f"merge_delete_column '{spec.delete_column}' is {kind}: make it a BOOLEAN "
                            f"(true removes the key), e.g. coalesce(op = 'D', false) as {spec.delete_column}")
    if problems:
        raise MergeError("; ".join(problems))


def _refuse_bad_keys(conn: DuckDBPyConnection, relation: str, keys: tuple[str, ...], what: str, fix: str,
                     nulls: bool = True) -> None:
    key_list = ", ".join(q(k) for k in keys)
    if nulls:
        null_rows = conn.execute(f"SELECT count(*) FROM {relation} WHERE " + " OR ".join(f"{q(k)} IS NULL" for k in keys)).fetchone()[0]
        if null_rows:
            raise MergeError(
                f"{null_rows} row(s) of {what} have a NULL unique_key ({', '.join(keys)}): a merge cannot place them. "
                f"Reject them in the model (_reject_reason = 'missing_key') or filter them."
            )
    dupes = conn.execute(
        f"SELECT {key_list}, count(*) AS n FROM {relation} GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC, {key_list}"
    ).fetchall()
    if dupes:
        sample = "; ".join(", ".join(str(v) for v in row[:-1]) + f" ({row[-1]} rows)" for row in dupes[:SAMPLE_KEYS])
        raise MergeError(f"{len(dupes)} key(s) of {what} appear more than once ({', '.join(keys)}): {sample}. {fix}")
