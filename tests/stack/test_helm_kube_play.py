"""The Helm chart's PostgreSQL, MinIO, code location, webserver and SQL endpoint manifests, rendered
by helm and started for real under ``podman kube play`` (podman 4.3, no cluster): the webserver
answers on loopback with the code location loaded over gRPC from the instance ConfigMap's Postgres
storage, and the SQL endpoint (`rat serve`) logs a BI client in and serves a table the code
location's pod wrote to the chart's S3 and catalog, spilling a large sort to its emptyDir.

What podman 4.3's kube play cannot do, and what this test does instead (the rest is played as
rendered: Deployments, ConfigMaps as envFrom and as volumes, secretKeyRef env, emptyDirs, the
read-only root filesystems, runAsUser/runAsGroup, resource limits, commands and ports):

- Kinds are Pod, Deployment, PersistentVolumeClaim and ConfigMap only: Services, ServiceAccounts
  and Secrets are not played. The StatefulSets of the bundled Postgres and MinIO become Deployments
  (their volumeClaimTemplates emptyDirs). Each Secret becomes a podman secret of the same name holding
  the rendered Secret's data as JSON ({key: base64 value}), which is what kube play's secretKeyRef
  reads.
- No Service DNS (and no aardvark-dns here): each pod gets a static IP on a test network and every
  pod gets hostAliases naming the Services (rat-ratatouille-postgres, -minio and -code).
- No volumeMounts.subPath: the instance ConfigMap is mounted as the whole $DAGSTER_HOME instead of
  an emptyDir with dagster.yaml laid over it.
- No fsGroup: an emptyDir is a root-owned anonymous volume the non-root containers cannot write
  (postgres: "could not create lock file "/var/run/postgresql/.s.PGSQL.5432.lock": Permission
  denied"). Each emptyDir becomes a hostPath folder with mode 1777, as writable as fsGroup makes it.
- No ServiceAccount token: Kubernetes mounts one into the webserver (automountServiceAccountToken)
  and sets KUBERNETES_SERVICE_HOST/PORT; without them the K8sRunLauncher the webserver builds from
  the instance ConfigMap fails with "Service host/port is not set.". The test mounts a dummy token
  and sets the variables (nothing calls the API: no run is launched here).
- Probes other than liveness are ignored, and healthchecks need systemd: readiness is polled here
  (for the SQL endpoint, by running its rendered readiness probe in its container).
- Jobs are not played: the MinIO bucket hook Job's script runs in the MinIO pod instead (its
  stand-in image is also the `mc` image, as in compose.test.yml), with the Job's env resolved.

The images are the locally built ones (tests/stack/stack.sh images, from the current lock: the
chart's instance config names the K8sRunLauncher, so the app image must have dagster-k8s), and
the test stand-ins for PostgreSQL and MinIO (moto's S3 server behind MinIO's command line).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ratatouille_assets import client
from tests.helm import helm, values_args
from tests.services import free_port

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
APP_IMAGE = os.environ.get("RATATOUILLE_IMAGE", "localhost/ratatouille:latest")
POSTGRES_IMAGE = "localhost/ratatouille-test-postgres:15"
S3_IMAGE = "localhost/ratatouille-test-s3:moto"
NETWORK = "ratatouille-helm-test"
SUBNET = "10.89.77.0/24"
IPS = {"postgres": "10.89.77.10", "code": "10.89.77.11", "webserver": "10.89.77.12", "minio": "10.89.77.13",
       "sql": "10.89.77.14"}
SERVICES = {"rat-ratatouille-postgres": "postgres", "rat-ratatouille-code": "code", "rat-ratatouille-minio": "minio"}
TEMPLATES = ["configmap-env.yaml", "configmap-instance.yaml", "configmap-workspace.yaml", "configmap-sql.yaml",
             "secret.yaml", "postgres.yaml", "minio.yaml", "code.yaml", "webserver.yaml", "sql.yaml"]
# Started in this order; the code location, webserver and SQL endpoint need the first two.
ORDER = ("postgres", "minio", "code", "webserver", "sql")
TIMEOUT = int(os.environ.get("STACK_TIMEOUT", "300"))
# A table the code location's pod writes (as a run worker would), which the SQL endpoint serves.
TABLE = "gold.kube_play"
DISHES = [("pistou", 2), ("ratatouille", 7), ("tian", 4)]


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def app_image() -> str:
    """The app image as `make stack-images` built it from the current lock (it has dagster-k8s)."""
    has_k8s = podman("run", "--rm", "--entrypoint", "python", APP_IMAGE, "-c", "import dagster_k8s", check=False)
    assert has_k8s.returncode == 0, (
        f"{APP_IMAGE} cannot import dagster_k8s (built from an older lock?): run `make stack-images`.\n{has_k8s.stderr[-2000:]}"
    )
    return APP_IMAGE


def image_user(image: str) -> int:
    out = podman("run", "--rm", "--entrypoint", "id", image, "-u").stdout
    return int(out.strip())


def kube_play_docs(image: str, pg_uid: int, s3_uid: int, host_ports: dict[str, int],
                   tmp_path: Path) -> tuple[dict[str, list], list, list]:
    repository, tag = image.rsplit(":", 1)
    pg_repository, pg_tag = POSTGRES_IMAGE.rsplit(":", 1)
    s3_repository, s3_tag = S3_IMAGE.rsplit(":", 1)
    values = {
        "profile": "tiny",
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "postgres": {"image": {"repository": pg_repository, "tag": pg_tag, "pullPolicy": "Never"},
                     "runAsUser": pg_uid, "password": "helm-kube-play-pg"},
        "minio": {"auth": {"secretAccessKey": "helm-kube-play-s3"}, "runAsUser": s3_uid,
                  "image": {"repository": s3_repository, "tag": s3_tag, "pullPolicy": "Never"},
                  "mcImage": {"repository": s3_repository, "tag": s3_tag, "pullPolicy": "Never"}},
        # sql: as installed by default (its password generated by the chart).
        "config": {"scheduleEnabled": False},
    }
    args = ["template", "rat", str(ROOT / "helm" / "ratatouille"), "--namespace", "lake", *values_args(values, tmp_path)]
    for template in TEMPLATES:
        args += ["--show-only", f"templates/{template}"]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    jobs = [d for d in docs if d["kind"] == "Job"]  # not played: see run_job_script
    pods: dict[str, list] = {}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue  # Services: no such kind in kube play 4.3 (hostAliases below stand in)
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        pods[component] = [*copy.deepcopy(configmaps), adapt(doc, host_ports, tmp_path / "volumes")]
    assert set(pods) == set(ORDER)
    assert [j["metadata"]["name"] for j in jobs] == ["rat-ratatouille-minio-bucket"]
    return pods, secrets, jobs


def adapt(workload: dict[str, Any], host_ports: dict[str, int], volumes_dir: Path) -> dict[str, Any]:
    """The few changes podman 4.3's kube play needs (see the module docstring)."""
    workload = copy.deepcopy(workload)
    spec = workload["spec"]
    if workload["kind"] == "StatefulSet":
        workload["kind"] = "Deployment"
        spec.pop("serviceName")
        for claim in spec.pop("volumeClaimTemplates"):
            spec["template"]["spec"]["volumes"].append({"name": claim["metadata"]["name"], "emptyDir": {}})
    pod = spec["template"]["spec"]
    pod["hostAliases"] = [{"ip": IPS[component], "hostnames": [host]} for host, component in SERVICES.items()]
    for container in pod["containers"]:
        mounts = container.get("volumeMounts", [])
        if any(m.get("subPath") for m in mounts):
            # No subPath: the instance ConfigMap becomes $DAGSTER_HOME itself.
            container["volumeMounts"] = [m for m in mounts if m["name"] not in ("dagster-home", "instance")]
            container["volumeMounts"].append({"name": "instance", "mountPath": "/opt/dagster/home", "readOnly": True})
        if container["name"] in host_ports:  # the webserver's and the SQL endpoint's port, on loopback
            container["ports"][0].update({"hostIP": "127.0.0.1", "hostPort": host_ports[container["name"]]})
        if container["name"] == "webserver":
            container["env"] += [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                                 {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]
            token_dir = volumes_dir / f"{workload['metadata']['name']}-serviceaccount"
            token_dir.mkdir(parents=True)
            for name, text in (("token", "dummy"), ("namespace", "lake"),
                               ("ca.crt", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")):
                (token_dir / name).write_text(text)
                (token_dir / name).chmod(0o644)
            container["volumeMounts"].append({"name": "serviceaccount", "readOnly": True,
                                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
            pod["volumes"].append({"name": "serviceaccount", "hostPath": {"path": str(token_dir), "type": "Directory"}})
    used = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] in used]
    for volume in pod["volumes"]:
        if volume.pop("emptyDir", None) is not None:
            path = volumes_dir / f"{workload['metadata']['name']}-{volume['name']}"
            path.mkdir(parents=True)
            path.chmod(0o1777)
            volume["hostPath"] = {"path": str(path), "type": "Directory"}
    return workload


def wait_for(what: str, check, timeout: float, on_timeout) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(3)
    pytest.fail(f"{what} not ready after {timeout:.0f} s (last error: {last})\n{on_timeout()}")


def container_name(component: str) -> str:
    """kube play names a Deployment's pod <name>-pod-0 and its containers <pod>-<container>."""
    return f"rat-ratatouille-{component}-pod-0-{component}"


def secret_value(secrets: list[dict[str, Any]], name: str, key: str) -> str:
    secret = next(s for s in secrets if s["metadata"]["name"] == name)
    return base64.b64decode(secret["data"][key]).decode()


def run_job_script(job: dict[str, Any], secrets: list[dict[str, Any]], component: str) -> str:
    """A Job's container command, with its env (Secret references resolved), run in the running
    container of ``component`` (kube play 4.3 plays no Jobs)."""
    (spec,) = job["spec"]["template"]["spec"]["containers"]
    env = []
    for entry in spec.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secret_value(secrets, ref["name"], ref["key"])
        else:
            value = entry["value"]
        env += ["-e", f"{entry['name']}={value}"]
    proc = podman("exec", *env, container_name(component), *spec["command"], *spec.get("args", []), timeout=180)
    return proc.stdout + proc.stderr


def remove_leftovers(files: dict[str, Path]) -> None:
    """Remove this test's pods and containers, whatever state an earlier run left them in.

    ``kube down`` only finds what a finished ``kube play`` registered: a play killed half-way (a
    timeout) leaves a container named like ours in storage only (``podman ps --external``), and
    the next play then fails with "the container name ... is already in use". (A killed podman
    also keeps its locks held, and the next command hangs on them: ``make stack-test`` runs
    ``podman system renumber`` first.)
    """
    for component in reversed(list(files)):
        podman("kube", "down", str(files[component]), check=False)
    for component in files:
        podman("pod", "rm", "-f", "-i", f"rat-ratatouille-{component}-pod-0", check=False)
        podman("rm", "-f", "-i", container_name(component), check=False)


def logs(pods: dict[str, Any]) -> str:
    out = []
    for component in pods:
        name = container_name(component)
        proc = podman("logs", "--tail", "40", name, check=False)
        out.append(f"--- {name}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("podman") is None:
        pytest.fail("podman missing: run `make stack-test`, which installs it")
    if not os.environ.get("CONTAINERS_CONF"):
        pytest.fail("CONTAINERS_CONF is not set: run `make stack-test` (it writes and selects containers.conf)")
    for image in (APP_IMAGE, POSTGRES_IMAGE, S3_IMAGE):
        if not image_exists(image):
            pytest.fail(f"{image} missing: run `tests/stack/stack.sh images` (make stack-images)")
    tmp_path = tmp_path_factory.mktemp("kube-play")
    ports = {"webserver": free_port(), "sql": free_port()}
    pods, secrets, jobs = kube_play_docs(app_image(), image_user(POSTGRES_IMAGE), image_user(S3_IMAGE), ports, tmp_path)
    files = {}
    for component, docs in pods.items():
        files[component] = tmp_path / f"{component}.yaml"
        files[component].write_text(yaml.safe_dump_all(docs, sort_keys=False))
    remove_leftovers(files)
    podman("network", "rm", "-f", NETWORK, check=False)
    podman("network", "create", "--subnet", SUBNET, NETWORK)
    for secret in secrets:
        podman("secret", "rm", secret["metadata"]["name"], check=False)
        path = tmp_path / f"secret-{secret['metadata']['name']}.yaml"
        # kube play 4.3 reads a podman secret as JSON {key: base64 value}: the Secret's data.
        path.write_text(json.dumps(secret["data"]))
        podman("secret", "create", secret["metadata"]["name"], str(path))
    try:
        started = time.monotonic()
        for component in ORDER:
            podman("kube", "play", "--network", NETWORK, "--ip", IPS[component], str(files[component]))
            if component == "postgres":
                wait_for("postgres", lambda: podman(
                    "exec", container_name("postgres"), "pg_isready", "-q", "-h", "127.0.0.1",
                    check=False).returncode == 0, 120, lambda: logs({"postgres": files["postgres"]}))
            if component == "minio":
                wait_for("minio", lambda: podman("exec", container_name("minio"), "mc", "ready", "local",
                                                 check=False).returncode == 0, 120, lambda: logs({"minio": files["minio"]}))
                # The chart's bucket hook (post-install), as the Job would run it.
                print(run_job_script(jobs[0], secrets, "minio"))
        url = f"http://127.0.0.1:{ports['webserver']}"
        wait_for("webserver", lambda: urllib.request.urlopen(url + "/server_info", timeout=5).status == 200,
                 TIMEOUT, lambda: logs(files))
        yield {"url": url, "files": files, "started": started, "sql_port": ports["sql"], "secrets": secrets,
               "pods": pods, "volumes": tmp_path / "volumes"}
    finally:
        if os.environ.get("STACK_KEEP") != "1":
            remove_leftovers(files)
            for secret in secrets:
                podman("secret", "rm", secret["metadata"]["name"], check=False)
            podman("network", "rm", "-f", NETWORK, check=False)


def test_webserver_answers_with_the_code_location_loaded(played):
    query = ("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
             "locationOrLoadError { __typename ... on PythonError { message } } } } } }")

    def loaded() -> bool:
        entries = client.graphql(played["url"], query)["workspaceOrError"]["locationEntries"]
        assert entries and entries[0]["locationOrLoadError"]["__typename"] != "PythonError", entries
        return [(e["name"], e["loadStatus"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
            ("ratatouille", "LOADED", "RepositoryLocation")]

    wait_for("code location", loaded, TIMEOUT, lambda: logs(played["files"]))
    print(f"webserver answered with the location loaded {time.monotonic() - played['started']:.0f} s after kube play")
    # The instance the webserver runs on is the chart's: Postgres storage, the K8sRunLauncher.
    info = client.graphql(played["url"], "{ instance { runLauncher { name } runQueuingSupported } }")["instance"]
    assert info["runLauncher"]["name"] == "K8sRunLauncher" and info["runQueuingSupported"] is True
    repos = client.graphql(played["url"], "{ repositoriesOrError { ... on RepositoryConnection { nodes { name "
                                          "jobs { name } } } } }")["repositoriesOrError"]["nodes"]
    assert "all_layers" in {j["name"] for r in repos for j in r["jobs"]}


def test_the_pods_run_as_the_chart_says(played):
    inspect = yaml.safe_load(podman("inspect", container_name("webserver")).stdout)[0]
    assert inspect["Config"]["User"] == "10001:10001"
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert inspect["HostConfig"]["Memory"] == 1024 ** 3  # the tiny profile's webserver limit
    code = yaml.safe_load(podman("inspect", container_name("code")).stdout)[0]
    env = dict(e.split("=", 1) for e in code["Config"]["Env"])
    assert env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"] == "998MiB" and env["RATATOUILLE_DUCKDB_THREADS"] == "1"
    assert env["RATATOUILLE_CATALOG_URI"] == "postgresql+psycopg2://ratatouille@rat-ratatouille-postgres:5432/ratatouille"
    assert env["DAGSTER_PG_PASSWORD"] == "helm-kube-play-pg"  # from the Secret, by reference
    sql = yaml.safe_load(podman("inspect", container_name("sql")).stdout)[0]
    assert sql["Config"]["User"] == "10001:10001" and sql["HostConfig"]["ReadonlyRootfs"] is True
    assert sql["HostConfig"]["Memory"] == 1024 ** 3  # the tiny profile's sql limit
    sql_env = dict(e.split("=", 1) for e in sql["Config"]["Env"])
    # Its own DuckDB: 0.65 x its 1Gi limit, its 1 cpu; the storage as the code location has it.
    assert sql_env["RATATOUILLE_DUCKDB_MEMORY_LIMIT"] == "665MiB" and sql_env["RATATOUILLE_DUCKDB_THREADS"] == "1"
    for key in ("RATATOUILLE_CATALOG_URI", "RATATOUILLE_CATALOG_PASSWORD", "RATATOUILLE_WAREHOUSE",
                "RATATOUILLE_S3_ENDPOINT", "RATATOUILLE_S3_SECRET_ACCESS_KEY"):
        assert sql_env[key] == env[key], key
    assert sql_env["RATATOUILLE_SQL_PASSWORD"] == secret_value(played["secrets"], "rat-ratatouille-sql", "sql-password")
    # Nothing of Dagster's from the chart (the image's own ENV sets DAGSTER_HOME).
    assert not [k for k in sql_env if k.startswith(("DAGSTER_PG_", "AWS_"))]


# Written in the code location's container with its settings (the chart's storage, as a run
# worker has it): argv[1] is the rows as JSON, argv[2] the table.
WRITE = """
import json, sys
import pyarrow as pa
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import write_window
from ratatouille_assets.settings import get_settings
rows = json.loads(sys.argv[1])
table = pa.table({"dish": pa.array([r[0] for r in rows]), "portions": pa.array([r[1] for r in rows], pa.int64())})
write_window(load_catalog(get_settings()), sys.argv[2], table, window=None, run_id="helm-kube-play")
"""
# A sort larger than the SQL endpoint's DuckDB memory limit (665MiB): it spills to .tmp under /app,
# the emptyDir the chart mounts there (the root filesystem is read-only). ~8 s on one core.
SPILL_ROWS = 80_000_000
SPILL = f"SELECT count(*) FROM (SELECT i, hash(i) AS h FROM range({SPILL_ROWS}) t(i) ORDER BY h)"


def test_the_sql_endpoint_serves_the_warehouse_to_a_bi_client(played):
    import psycopg2

    sql_spec = played["pods"]["sql"][-1]["spec"]["template"]["spec"]["containers"][0]
    readiness = sql_spec["readinessProbe"]["exec"]["command"]
    # Its readiness probe as rendered (a login and SELECT 1, which reads the catalog), in its pod.
    wait_for("sql endpoint", lambda: podman("exec", container_name("sql"), *readiness, check=False).returncode == 0,
             TIMEOUT, lambda: logs(played["files"]))
    print(f"sql endpoint ready {time.monotonic() - played['started']:.0f} s after kube play")
    podman("exec", container_name("code"), "python", "-c", WRITE, json.dumps(DISHES), TABLE, timeout=300)
    password = secret_value(played["secrets"], "rat-ratatouille-sql", "sql-password")
    connect = dict(host="127.0.0.1", port=played["sql_port"], user="ratatouille", password=password,
                   dbname="lakehouse", connect_timeout=10)
    with contextlib.closing(psycopg2.connect(**connect)) as bi:
        cursor = bi.cursor()
        cursor.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = 'gold'")
        assert ("gold", "kube_play") in cursor.fetchall()
        cursor.execute(f"SELECT dish, portions FROM {TABLE} ORDER BY dish")
        assert cursor.fetchall() == DISHES
        # Read-only: a write is refused.
        with pytest.raises(psycopg2.Error, match="read-only"):
            cursor.execute(f"DELETE FROM {TABLE}")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(**{**connect, "password": "wrong"})

    # DuckDB spills into the emptyDir at /app/.tmp (a hostPath here: watched from outside).
    spill_dir = played["volumes"] / "rat-ratatouille-sql-duckdb-tmp"
    assert spill_dir.is_dir()
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(os.listdir(spill_dir))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        with contextlib.closing(psycopg2.connect(**connect)) as bi:
            cursor = bi.cursor()
            cursor.execute(SPILL)
            assert cursor.fetchone() == (SPILL_ROWS,), logs({"sql": played["files"]["sql"]})
    finally:
        done.set()
        watcher.join()
    print(f"a {SPILL_ROWS:,}-row sort in {time.monotonic() - started:.1f} s, spilled: {sorted(seen)}")
    assert any(name.startswith("duckdb_temp") for name in seen), seen
