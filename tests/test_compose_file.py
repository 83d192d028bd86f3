"""docker-compose.yml, .env.example, Dockerfile and stack/ agree with each other and with the
settings the code reads (the stack itself comes up in tests/stack)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ratatouille_assets import settings as settings_module

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
LONG_RUNNING = ("postgres", "minio", "code", "webserver", "daemon", "sql", "jupyter")
DAGSTER = ("code", "webserver", "daemon")


def example_variables() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE, re.MULTILINE))


def test_every_variable_the_compose_file_reads_is_in_env_example():
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::?-[^}]*)?\}", (ROOT / "docker-compose.yml").read_text()))
    missing = sorted(used - set(example_variables()))
    assert used and missing == []


def test_services_have_healthchecks_and_wait_for_healthy_dependencies():
    services = COMPOSE["services"]
    assert set(services) == {*LONG_RUNNING, "minio-init"}
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"][0] == "CMD-SHELL", name
        assert "mem_limit" in services[name], name
    for name, service in services.items():
        for dep, condition in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep == "minio-init" else "service_healthy"
            assert condition == {"condition": wanted}, (name, dep)
    assert services["code"]["depends_on"].keys() == {"postgres", "minio-init"}
    assert {"postgres", "code"} <= services["webserver"]["depends_on"].keys()
    assert services["sql"]["depends_on"].keys() == {"postgres", "minio-init"}
    assert services["jupyter"]["depends_on"].keys() == {"postgres", "minio-init"}
    # Named volumes only: data survives `down` and is not tied to a host path.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in COMPOSE["volumes"], (name, volume)


def test_dagster_containers_share_one_configuration():
    services = COMPOSE["services"]
    envs = [services[name]["environment"] for name in DAGSTER]
    assert envs[0] == envs[1] == envs[2]
    env = envs[0]
    assert {services[name]["image"] for name in DAGSTER} == {"${RATATOUILLE_IMAGE:-ratatouille:latest}"}
    # Every RATATOUILLE_* the stack sets is a setting the code reads.
    known = set(re.findall(r'_env\("([A-Z0-9_]+)"', Path(settings_module.__file__).read_text()))
    known |= {"CATALOG_PASSWORD", "ALERT_WEBHOOK_URL", "CODE_HOST"}
    unknown = [k for k in env if k.startswith("RATATOUILLE_") and k.removeprefix("RATATOUILLE_") not in known]
    assert unknown == []
    # No password in the catalog URI: it comes separately (and never prints).
    assert "PASSWORD" not in env["RATATOUILLE_CATALOG_URI"]
    for name in DAGSTER:
        assert services[name]["stop_signal"] == "SIGINT"


def test_example_passwords_are_placeholders():
    values = example_variables()
    for key in ("MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD", "S3_SECRET_ACCESS_KEY", "SQL_PASSWORD", "JUPYTER_TOKEN"):
        assert values[key].startswith("change-me"), key
    assert values["S3_SECRET_ACCESS_KEY"] == values["MINIO_ROOT_PASSWORD"]


def test_the_stack_instance_config_is_valid_dagster_config(tmp_path, monkeypatch):
    # The webserver, daemon and code location of the stack load exactly this file.
    for var, value in {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "u",
                       "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_DB": "d", "DAGSTER_COMPUTE_LOG_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(var, value)
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(ROOT / "stack"))
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    workspace = yaml.safe_load((ROOT / "stack" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["location_name"] == "ratatouille"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY --from=build /app/stack/dagster.yaml /opt/dagster/home/dagster.yaml" in dockerfile
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)
    assert "ARG BASE_IMAGE=" in dockerfile


@pytest.mark.parametrize("name", ["tiny", "small", "large"])
def test_profiles_in_env_example_give_duckdb_less_than_the_container(name):
    line = re.search(rf"#\s+{name}:\s+CODE_MEMORY=(\d+)g\s+DUCKDB_MEMORY_LIMIT=(\d+)(MB|GB)", ENV_EXAMPLE)
    assert line, name
    code_gb = int(line[1])
    duck_gb = int(line[2]) / (1024 if line[3] == "MB" else 1)
    # Two runs at a time share the container: each DuckDB gets at most half, with room for Python.
    assert 2 * duck_gb < code_gb



def test_instance_files_share_the_run_queue_settings_and_dagster_accepts_them(tmp_path, monkeypatch):
    """Dagster's default run queue pass every 5 s, each launch waiting for the one before, was a
    visible share of a short run's wait under `make dev`: the embedded instance and the server
    stack's poll every second and launch side by side (the chart's instance: test_helm_chart)."""
    import dagster as dg

    embedded = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_queue"]
    server = yaml.safe_load((ROOT / "stack" / "dagster.yaml").read_text())["run_queue"]
    assert embedded == server == {"dequeue_interval_seconds": 1, "dequeue_use_threads": True}
    # `run_queue` next to `concurrency: runs:` is valid, and the daemon's coordinator gets both.
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # the embedded storage lives in DAGSTER_HOME
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")  # restored after: the storage sets it for its process
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert (coordinator.dequeue_interval_seconds, coordinator.dequeue_use_threads) == (1, True)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2


def test_rat_demo_keeps_a_server_instance_file_and_refreshes_its_own(tmp_path, monkeypatch):
    from ratatouille_assets.demo import ensure_dagster_home
    from ratatouille_assets.settings import load_settings

    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ours = (ROOT / "dagster.yaml").read_text()
    # The server stack's instance (Postgres storage) in DAGSTER_HOME: left as it is.
    home.mkdir()
    server = (ROOT / "stack" / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(server)
    ensure_dagster_home(load_settings(str(tmp_path / "rt")))
    assert (home / "dagster.yaml").read_text() == server
    # An older copy of the embedded default: brought up to date.
    (home / "dagster.yaml").write_text(ours.split("\n", 1)[0] + "\ntelemetry:\n  enabled: true\n")
    ensure_dagster_home(load_settings(str(tmp_path / "rt")))
    assert (home / "dagster.yaml").read_text() == ours


def test_the_sql_service_serves_the_stacks_lakehouse_on_all_interfaces_of_its_container():
    service = COMPOSE["services"]["sql"]
    env, code = service["environment"], COMPOSE["services"]["code"]["environment"]
    assert service["command"] == ["rat", "serve"]
    # The same warehouse and catalog as the code location, and only what reading them needs.
    for key in ("RATATOUILLE_WAREHOUSE", "RATATOUILLE_S3_ENDPOINT", "RATATOUILLE_CATALOG_URI", "RATATOUILLE_CATALOG_PASSWORD"):
        assert env[key] == code[key], key
    known = set(re.findall(r'"(SQL_[A-Z_]+)"', Path(settings_module.__file__).read_text())) | {
        "WAREHOUSE", "S3_ENDPOINT", "S3_REGION", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "CATALOG_URI",
        "CATALOG_PASSWORD", "DUCKDB_MEMORY_LIMIT", "DUCKDB_THREADS"}
    assert [k for k in env if k.removeprefix("RATATOUILLE_") not in known] == []
    assert env["RATATOUILLE_SQL_HOST"] == "0.0.0.0"  # inside its container; published on BIND_ADDRESS
    assert service["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${SQL_PORT:-5433}:5433"]
    assert "RATATOUILLE_SQL_PASSWORD" in service["healthcheck"]["test"][1]


def test_jupyter_is_an_optional_profile_on_the_stacks_lakehouse_with_the_notebook_extra():
    service = COMPOSE["services"]["jupyter"]
    env, code = service["environment"], COMPOSE["services"]["code"]["environment"]
    assert service["profiles"] == ["notebook"]  # `docker compose up` leaves it out
    assert service["build"]["args"]["UV_EXTRAS"] == "--extra notebook"
    assert service["image"] != COMPOSE["services"]["code"]["image"]  # the platform's image stays small
    for key in ("RATATOUILLE_WAREHOUSE", "RATATOUILLE_S3_ENDPOINT", "RATATOUILLE_CATALOG_URI", "RATATOUILLE_CATALOG_PASSWORD"):
        assert env[key] == code[key], key
    assert "/app/docs/notebooks/" in service["command"][-1] and (ROOT / "docs" / "notebooks" / "gold.ipynb").exists()
    assert service["volumes"] == ["notebooks:/home/ratatouille/notebooks"]
    assert "${UV_EXTRAS}" in (ROOT / "Dockerfile").read_text()
