"""Soda checks as Dagster asset checks: one ``AssetCheckSpec`` per SodaCL check, declared when the
definitions load, and scan outcomes -> ``AssetCheckResult`` with the metadata the UI shows."""

import json

import dagster as dg

from ratatouille_assets.quality.scan import CheckOutcome
from ratatouille_assets.quality.sodacl import DatasetChecks

QUARANTINE_CHECK = "no_quarantined_files"


def asset_key(dataset: DatasetChecks) -> dg.AssetKey:
    return dg.AssetKey([dataset.layer, dataset.table])


def soda_check_specs(datasets: dict[str, DatasetChecks], key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    dataset = datasets.get(".".join(key.path))
    if dataset is None:
        return []
    return [
        dg.AssetCheckSpec(
            name=check.name,
            asset=key,
            blocking=check.blocking,
            description=check.description,
            metadata={"soda_file": str(dataset.path), "soda_check": check.text},
        )
        for check in dataset.checks
    ]


def unknown_datasets(datasets: dict[str, DatasetChecks], keys: set[dg.AssetKey]) -> list[str]:
    """SodaCL files that name no asset (a typo in a file name would otherwise check nothing)."""
    return [f"{d.path} (no asset {asset_key(d).to_user_string()})" for d in datasets.values() if asset_key(d) not in keys]


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))


def audit_metadata(branch: str, snapshot_id: int | None) -> dict:
    """Where a run whose blocking checks failed left its rows (write-audit-publish)."""
    return {
        "audit/branch": dg.MetadataValue.text(branch),
        "audit/snapshot_id": dg.MetadataValue.text(str(snapshot_id)),
        "audit/published": dg.MetadataValue.bool(False),
    }


def check_result(key: dg.AssetKey, outcome: CheckOutcome, extra: dict | None = None) -> dg.AssetCheckResult:
    metadata: dict = {
        "outcome": dg.MetadataValue.text(outcome.outcome),
        "measured_value": dg.MetadataValue.text(str(outcome.value)),
        "threshold": dg.MetadataValue.json(_json_safe(outcome.thresholds)),
        "message": dg.MetadataValue.text(outcome.message),
    }
    if isinstance(outcome.value, int | float) and not isinstance(outcome.value, bool):
        metadata["value"] = dg.MetadataValue.float(float(outcome.value))
    if outcome.failing_rows is not None:
        metadata["failing_rows"] = dg.MetadataValue.int(int(outcome.failing_rows))
    if outcome.samples:
        metadata["sample_failing_rows"] = dg.MetadataValue.json(_json_safe(list(outcome.samples)))
    metadata.update(extra or {})
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def quarantine_check_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=QUARANTINE_CHECK,
        asset=key,
        blocking=False,
        description="Warns when landing files of the partition were quarantined (see quarantine/<source>/<day>/).",
    )


def quarantine_result(key: dg.AssetKey, quarantined: list) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=QUARANTINE_CHECK,
        passed=not quarantined,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "quarantined_files": dg.MetadataValue.int(len(quarantined)),
            "files": dg.MetadataValue.json([{"file": q.file, "reason": q.reason, "message": q.message} for q in quarantined]),
        },
    )
