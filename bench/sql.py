"""The dbt models' compiled SQL, so plain DuckDB (and the history builder) runs exactly our SQL.

The project is compiled once with sentinel window dates; :func:`for_window` swaps in a real
window. Compiled SQL names relations ``"memory"."<schema>"."<table>"``, which is what an
in-memory DuckDB with schemas ``bronze``, ``silver`` and ``gold`` resolves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

START, END = "1901-01-01", "1901-12-31"  # sentinels: appear nowhere else in the SQL
AFTER = "1902-01-01"  # the day after END: in_window() bounds timestamps by it
REJECT_COLUMN = "_reject_reason"


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    schema: str
    sql: str
    partition_by: str | None
    depends_on: tuple[str, ...]
    # strategy='scd2': the key and the updated_at column (plain DuckDB adds the version columns).
    scd2_key: tuple[str, ...] = ()
    scd2_updated_at: str | None = None
    granularity: str = "day"  # partition_granularity: the Iceberg partitions of a daily model

    @property
    def identifier(self) -> str:
        return f"{self.schema}.{self.name}"

    def for_window(self, start: str, end: str) -> str:
        after = (dt.date.fromisoformat(end) + dt.timedelta(days=1)).isoformat()
        return self.sql.replace(START, start).replace(END, end).replace(AFTER, after)


def compile_models(project_dir: Path, work: Path, reporting_currency: str = "USD") -> list[Model]:
    """``dbt compile`` the project into ``work`` and return its models in dependency order."""
    work.mkdir(parents=True, exist_ok=True)
    target = work / "dbt-compile"
    env = {**os.environ, "RATATOUILLE_HOME": str(work / "compile-home"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    env.pop("RATATOUILLE_TRACE_FILE", None)
    variables = {"min_date": START, "max_date": END, "reporting_currency": reporting_currency}
    dbt = str(Path(sys.executable).parent / "dbt")
    result = subprocess.run(
        [dbt, "compile", "--quiet", "--vars", json.dumps(variables), "--profiles-dir", str(project_dir),
         "--project-dir", str(project_dir), "--target-path", str(target), "--log-path", str(target)],
        env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt compile failed:\n{result.stdout}{result.stderr}")
    manifest = json.loads((target / "manifest.json").read_text())
    nodes = {uid: n for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    models: dict[str, Model] = {}
    for uid, node in nodes.items():
        compiled = target / "compiled" / node["package_name"] / node["original_file_path"]
        config = node.get("config") or {}
        scd2 = config.get("strategy") == "scd2"
        key = config.get("unique_key")
        models[uid] = Model(
            name=node.get("alias") or node["name"], schema=node["schema"], sql=compiled.read_text(),
            partition_by=config.get("partition_by"),
            depends_on=tuple(d for d in node["depends_on"]["nodes"] if d in nodes),
            scd2_key=tuple([key] if isinstance(key, str) else key or ()) if scd2 else (),
            scd2_updated_at=config.get("updated_at") if scd2 else None,
            granularity=config.get("partition_granularity") or "day",
        )
    ordered: list[str] = []

    def visit(uid: str) -> None:
        if uid in ordered:
            return
        for dep in models[uid].depends_on:
            visit(dep)
        ordered.append(uid)

    for uid in sorted(models):
        visit(uid)
    return [models[uid] for uid in ordered]


def save(models: list[Model], path: Path) -> None:
    path.write_text(json.dumps([dataclasses.asdict(m) for m in models]))


def load(path: Path) -> list[Model]:
    return [Model(**{**m, "depends_on": tuple(m["depends_on"]), "scd2_key": tuple(m.get("scd2_key", ()))})
            for m in json.loads(path.read_text())]
