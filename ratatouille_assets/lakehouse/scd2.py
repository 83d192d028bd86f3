"""SCD2 (a history table) of a model's result, in DuckDB SQL.

The model's result holds versions of rows: one row per ``unique_key`` and ``updated_at`` (the
latest export of changed rows, or a whole history at once). The table keeps every version with
``valid_from`` (its ``updated_at``), ``valid_to`` (the next version's ``valid_from``; NULL while
it is current) and ``is_current``:

- a version the table does not hold is added, and the version before it in time is closed at its
  ``valid_from``; a version that arrives late is slotted into the history where it belongs;
- a version equal, column for column, to the one before it adds nothing (the row did not change);
- a version the table already holds (the same key and ``updated_at``, the same values) is a replay
  and changes nothing, so a replayed run leaves the table as it was;
- the rows of keys the result does not mention are left exactly as they are.

Refused, with counts and sample keys: a NULL key or ``updated_at``; two different rows for one key
at one ``updated_at`` (which is the version?), in the result or against the table (a version is not
rewritten in place). A version the table holds is never removed.

The steps go through TEMP tables of the new versions and the touched keys' histories (what a run
changes, not the table), and the table's new content is one full outer join of the table with
those versions, streamed into the write path by the caller.
"""

from __future__ import annotations

import dataclasses
import uuid

from duckdb import DuckDBPyConnection

from ratatouille_assets.lakehouse.duck import quote_ident as q
from ratatouille_assets.lakehouse.merge import SAMPLE_KEYS, MergeError, MergeSpec, columns

VERSION_COLUMNS = ("valid_from", "valid_to", "is_current")
_TIME_TYPES = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S")


@dataclasses.dataclass(frozen=True)
class Scd2Spec:
    unique_key: tuple[str, ...]
    updated_at: str

    @classmethod
    def from_config(cls, unique_key, updated_at) -> Scd2Spec:
        return cls(MergeSpec.from_config(unique_key).unique_key, updated_at)


@dataclasses.dataclass
class Scd2Plan:
    sql: str  # the table's new content
    counts: dict[str, int]  # new_keys, new_versions, late, closed, unchanged, kept
    temp_tables: tuple[str, ...]

    def properties(self) -> dict[str, str]:
        return {f"ratatouille.scd2.{k}": str(v) for k, v in self.counts.items()}

    def drop(self, conn: DuckDBPyConnection) -> None:
        for name in self.temp_tables:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def plan_scd2(conn: DuckDBPyConnection, changes: str, target: str | None, spec: Scd2Spec) -> Scd2Plan:
    """The history table's new content over ``changes`` (the model's good rows) and ``target`` (the
    table as read, or None), with counts. Call :meth:`Scd2Plan.drop` once the content is read."""
    src = columns(conn, changes)
    tgt = columns(conn, target) if target else {}
    keys, u = spec.unique_key, spec.updated_at
    _check_columns(spec, src, tgt)
    key_on = " AND ".join(f"s.{q(k)} = t.{q(k)}" for k in keys)
    nulls = conn.execute(f"SELECT count(*) FROM {changes} WHERE " + " OR ".join(f"{q(c)} IS NULL" for c in (*keys, u))).fetchone()[0]
    if nulls:
        raise MergeError(f"{nulls} row(s) of the model's result have a NULL unique_key or updated_at ({', '.join((*keys, u))}): "
                         "a history cannot place them. Reject them in the model (_reject_reason) or filter them.")
    tag = uuid.uuid4().hex[:12]
    incoming, seq, versions = (f"__rat_scd2_{part}_{tag}" for part in ("in", "seq", "ver"))
    plan = Scd2Plan("", {}, (incoming, seq, versions))
    try:
        received = conn.execute(f"SELECT count(*) FROM {changes}").fetchone()[0]
        conn.execute(f"CREATE TEMP TABLE {incoming} AS SELECT DISTINCT * FROM {changes}")
        _refuse_two_versions_at_once(conn, incoming, keys, u)
        tracked = [c for c in src if c not in keys and c != u]
        out = list(src) + [c for c in tgt if c not in src and c not in VERSION_COLUMNS]
        if target:
            _refuse_rewritten_versions(conn, incoming, target, spec, [c for c in tracked if c in tgt])
        # The new versions (not already in the table), then the histories of the keys they touch.
        missing = {c: tgt[c] for c in out if c not in src}
        new_cols = ", ".join([f"i.{q(c)}" for c in src] + [f"CAST(NULL AS {kind}) AS {q(c)}" for c, kind in missing.items()])
        new_rows = f"{incoming} i"
        if target:
            new_rows += (f" ANTI JOIN (SELECT {', '.join(q(k) for k in keys)}, valid_from FROM {target}) t "
                         f"ON {' AND '.join(f'i.{q(k)} = t.{q(k)}' for k in keys)} AND i.{q(u)} = t.valid_from")
        conn.execute(f"CREATE TEMP TABLE {seq} AS SELECT {new_cols}, i.{q(u)} AS __rat_from, true AS __rat_new, "
                     f"CAST(NULL AS {src[u]}) AS __rat_was_to FROM {new_rows}")
        if target:
            # One table, two inserts (no UNION of the two in one plan: see merge.py on DuckDB's hang).
            old_cols = ", ".join(f"t.{q(c)}" if c in tgt else f"NULL AS {q(c)}" for c in out)
            conn.execute(
                f"INSERT INTO {seq} SELECT {old_cols}, t.valid_from, false, t.valid_to FROM {target} t "
                f"SEMI JOIN (SELECT DISTINCT {', '.join(q(k) for k in keys)} FROM {seq}) s ON {key_on}"
            )
        part = ", ".join(q(k) for k in keys)
        same = " AND ".join(f"{q(c)} IS NOT DISTINCT FROM lag({q(c)}) OVER w" for c in tracked) or "true"
        conn.execute(
            f"CREATE TEMP TABLE {versions} AS SELECT *, lead(__rat_from) OVER (PARTITION BY {part} ORDER BY __rat_from) AS __rat_to "
            f"FROM (SELECT *, lag(__rat_from) OVER w IS NOT NULL AND {same} AS __rat_same FROM {seq} "
            f"WINDOW w AS (PARTITION BY {part} ORDER BY __rat_from)) WHERE NOT (__rat_new AND __rat_same)"
        )
        plan.counts = _counts(conn, versions, target, part, received)
        if not target:
            plan.sql = (f"SELECT {', '.join(q(c) for c in out)}, __rat_from AS valid_from, __rat_to AS valid_to, "
                        f"__rat_to IS NULL AS is_current FROM {versions}")
            return plan

        def pick(s: str, t: str) -> str:
            return f"CASE WHEN s.__rat_new IS NULL THEN {t} ELSE {s} END"

        values = [f"{pick(f's.{q(c)}', f't.{q(c)}') if c in tgt else f's.{q(c)}'} AS {q(c)}" for c in out]
        values += [f"{pick('s.__rat_from', 't.valid_from')} AS valid_from", f"{pick('s.__rat_to', 't.valid_to')} AS valid_to",
                   f"{pick('s.__rat_to IS NULL', 't.is_current')} AS is_current"]
        plan.sql = (f"SELECT {', '.join(values)} FROM {target} t FULL OUTER JOIN {versions} s "
                    f"ON {key_on} AND s.__rat_from = t.valid_from")
        return plan
    except BaseException:
        plan.drop(conn)
        raise


def _check_columns(spec: Scd2Spec, src: dict[str, str], tgt: dict[str, str]) -> None:
    problems = []
    for k in spec.unique_key:
        if k not in src:
            problems.append(f"unique_key column '{k}' is not in the model's result (columns: {', '.join(src)})")
    kind = src.get(spec.updated_at)
    if kind is None:
        problems.append(f"updated_at column '{spec.updated_at}' is not in the model's result (columns: {', '.join(src)})")
    elif kind.upper() not in _TIME_TYPES:
        problems.append(f"updated_at column '{spec.updated_at}' is {kind}: versions are ordered in time, so make it a "
                        f"DATE or TIMESTAMP (e.g. cast({spec.updated_at} as timestamp))")
    taken = [c for c in VERSION_COLUMNS if c in src]
    if taken:
        problems.append(f"the model's result has {', '.join(taken)}, which an scd2 table adds itself: rename them")
    if tgt:
        lacking = [c for c in (*spec.unique_key, *VERSION_COLUMNS) if c not in tgt]
        if lacking:
            problems.append(f"the table has no {', '.join(lacking)}: it was not built as scd2; rebuild it with --full-refresh")
    if problems:
        raise MergeError("; ".join(problems))


def _sample(rows) -> str:
    return "; ".join(", ".join(str(v) for v in row) for row in rows[:SAMPLE_KEYS])


def _refuse_two_versions_at_once(conn: DuckDBPyConnection, incoming: str, keys: tuple[str, ...], u: str) -> None:
    cols = ", ".join(q(c) for c in (*keys, u))
    dupes = conn.execute(f"SELECT {cols} FROM {incoming} GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL").fetchall()
    if dupes:
        raise MergeError(
            f"{len(dupes)} key(s) of the model's result have two different rows at one {u} ({', '.join(keys)}, {u}): "
            f"{_sample(dupes)}. Which is the version? Keep one row per key and {u} in the model."
        )


def _refuse_rewritten_versions(conn: DuckDBPyConnection, incoming: str, target: str, spec: Scd2Spec,
                               tracked: list[str]) -> None:
    keys, u = spec.unique_key, spec.updated_at
    on = " AND ".join(f"i.{q(k)} = t.{q(k)}" for k in keys) + f" AND i.{q(u)} = t.valid_from"
    differs = " OR ".join(f"i.{q(c)} IS DISTINCT FROM t.{q(c)}" for c in tracked) or "false"
    rows = conn.execute(
        f"SELECT {', '.join(f'i.{q(c)}' for c in (*keys, u))} FROM {incoming} i JOIN {target} t ON {on} "
        f"WHERE {differs} ORDER BY ALL"
    ).fetchall()
    if rows:
        raise MergeError(
            f"{len(rows)} row(s) of the model's result have the {u} of a version the table holds, with other values "
            f"({', '.join(keys)}, {u}): {_sample(rows)}. A version is never rewritten in place: give the change a later "
            f"{u}, or rebuild the history with --full-refresh."
        )


def _counts(conn: DuckDBPyConnection, versions: str, target: str | None, part: str, received: int) -> dict[str, int]:
    new_versions, late, closed, changed_old, new_keys = conn.execute(
        f"SELECT count(*) FILTER (WHERE __rat_new), "
        f"count(*) FILTER (WHERE __rat_new AND __rat_from < last_old), "
        f"count(*) FILTER (WHERE NOT __rat_new AND __rat_was_to IS NULL AND __rat_to IS NOT NULL), "
        f"count(*) FILTER (WHERE NOT __rat_new AND __rat_was_to IS DISTINCT FROM __rat_to), "
        f"count(DISTINCT ({part})) FILTER (WHERE last_old IS NULL) "
        f"FROM (SELECT *, max(CASE WHEN NOT __rat_new THEN __rat_from END) OVER (PARTITION BY {part}) AS last_old FROM {versions})"
    ).fetchone()
    total = conn.execute(f"SELECT count(*) FROM {target}").fetchone()[0] if target else 0
    return {"new_keys": int(new_keys), "new_versions": int(new_versions), "late": int(late), "closed": int(closed),
            "unchanged": int(received - new_versions), "kept": int(total - changed_old)}
