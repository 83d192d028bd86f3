"""The Helm chart's PostgreSQL, code location and webserver manifests, rendered by helm and started
for real under ``podman kube play`` (podman 4.3, no cluster): the webserver answers on loopback
with the code location loaded over gRPC from the instance ConfigMap's Postgres storage.

What podman 4.3's kube play cannot do, and what this test does instead (the rest is played as
rendered: Deployments, ConfigMaps as envFrom and as volumes, secretKeyRef env, emptyDirs, the
read-only root filesystems, runAsUser/runAsGroup, resource limits, commands and ports):

- Kinds are Pod, Deployment, PersistentVolumeClaim and ConfigMap only: Services, ServiceAccounts
  and Secrets are not played. The StatefulSet of the bundled Postgres becomes a Deployment (its
  volumeClaimTemplate an emptyDir). Each Secret becomes a podman secret of the same name holding
  the rendered Secret's data as JSON ({key: base64 value}), which is what kube play's secretKeyRef
  reads.
- No Service DNS (and no aardvark-dns here): each pod gets a static IP on a test network and every
  pod gets hostAliases naming the Services (rat-ratatouille-postgres, rat-ratatouille-code).
- No volumeMounts.subPath: the instance ConfigMap is mounted as the whole $DAGSTER_HOME instead of
  an emptyDir with dagster.yaml laid over it.
- No fsGroup: an emptyDir is a root-owned anonymous volume the non-root containers cannot write
  (postgres: "could not create lock file "/var/run/postgresql/.s.PGSQL.5432.lock": Permission
  denied"). Each emptyDir becomes a hostPath folder with mode 1777, as writable as fsGroup makes it.
- No ServiceAccount token: Kubernetes mounts one into the webserver (automountServiceAccountToken)
  and sets KUBERNETES_SERVICE_HOST/PORT; without them the K8sRunLauncher the webserver builds from
  the instance ConfigMap fails with "Service host/port is not set.". The test mounts a dummy token
  and sets the variables (nothing calls the API: no run is launched here).
- Probes other than liveness are ignored, and healthchecks need systemd: readiness is polled here.

The images are the locally built ones (tests/stack/stack.sh images, from the current lock: the
chart's instance config names the K8sRunLauncher, so the app image must have dagster-k8s).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
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
NETWORK = "ratatouille-helm-test"
SUBNET = "10.89.77.0/24"
IPS = {"postgres": "10.89.77.10", "code": "10.89.77.11", "webserver": "10.89.77.12"}
SERVICES = {"rat-ratatouille-postgres": "postgres", "rat-ratatouille-code": "code"}
TEMPLATES = ["configmap-env.yaml", "configmap-instance.yaml", "configmap-workspace.yaml", "secret.yaml",
             "postgres.yaml", "code.yaml", "webserver.yaml"]
TIMEOUT = int(os.environ.get("STACK_TIMEOUT", "300"))


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


def postgres_user() -> int:
    out = podman("run", "--rm", "--entrypoint", "id", POSTGRES_IMAGE, "-u").stdout
    return int(out.strip())


def kube_play_docs(image: str, pg_uid: int, webserver_port: int, tmp_path: Path) -> tuple[dict[str, list], list]:
    repository, tag = image.rsplit(":", 1)
    pg_repository, pg_tag = POSTGRES_IMAGE.rsplit(":", 1)
    values = {
        "profile": "tiny",
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "postgres": {"image": {"repository": pg_repository, "tag": pg_tag, "pullPolicy": "Never"},
                     "runAsUser": pg_uid, "password": "helm-kube-play-pg"},
        "minio": {"auth": {"secretAccessKey": "helm-kube-play-s3"}},
        "config": {"scheduleEnabled": False},
    }
    args = ["template", "rat", str(ROOT / "helm" / "ratatouille"), "--namespace", "lake", *values_args(values, tmp_path)]
    for template in TEMPLATES:
        args += ["--show-only", f"templates/{template}"]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    pods: dict[str, list] = {}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue  # Services: no such kind in kube play 4.3 (hostAliases below stand in)
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        pods[component] = [*copy.deepcopy(configmaps), adapt(doc, webserver_port, tmp_path / "volumes")]
    assert set(pods) == {"postgres", "code", "webserver"}
    return pods, secrets


def adapt(workload: dict[str, Any], webserver_port: int, volumes_dir: Path) -> dict[str, Any]:
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
        if container["name"] == "webserver":
            container["ports"][0].update({"hostIP": "127.0.0.1", "hostPort": webserver_port})
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
    for image in (APP_IMAGE, POSTGRES_IMAGE):
        if not image_exists(image):
            pytest.fail(f"{image} missing: run `tests/stack/stack.sh images` (make stack-images)")
    tmp_path = tmp_path_factory.mktemp("kube-play")
    port = free_port()
    pods, secrets = kube_play_docs(app_image(), postgres_user(), port, tmp_path)
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
        for component in ("postgres", "code", "webserver"):
            podman("kube", "play", "--network", NETWORK, "--ip", IPS[component], str(files[component]))
            if component == "postgres":
                wait_for("postgres", lambda: podman(
                    "exec", container_name("postgres"), "pg_isready", "-q", "-h", "127.0.0.1",
                    check=False).returncode == 0, 120, lambda: logs({"postgres": files["postgres"]}))
        url = f"http://127.0.0.1:{port}"
        wait_for("webserver", lambda: urllib.request.urlopen(url + "/server_info", timeout=5).status == 200,
                 TIMEOUT, lambda: logs(files))
        yield {"url": url, "files": files, "started": started}
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
