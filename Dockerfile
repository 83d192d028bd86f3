# syntax=docker/dockerfile:1
# Ratatouille's image: the code location (gRPC server, the default command), and in the compose
# stack also dagster-webserver and dagster-daemon.
#
#   docker build -t ratatouille .
#
# BASE_IMAGE is any Debian bookworm with or without Python: python:3.11-slim-bookworm by default;
# on a machine without registry access, a debootstrapped bookworm
# (--build-arg BASE_IMAGE=localhost/debian-base:bookworm), which gets Debian's python3 (3.11).
# Behind a TLS-intercepting proxy, hand its CA bundle in as a build secret (never stored in a layer):
#   podman build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt ...
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

# ---- the interpreter, shared by both stages (the venv links to it) ---------------------------------
FROM ${BASE_IMAGE} AS python
# Debian splits distutils out of python3.11 (python3-distutils); soda-core imports distutils.util.
RUN if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import distutils.util' 2>/dev/null \
        || [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-distutils ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c 'import sys, distutils.util; assert sys.version_info[:2] == (3, 11), sys.version'

# ---- build: uv, the locked environment, the dbt manifest -------------------------------------------
FROM python AS build
ARG UV_VERSION=0.13.9
# Extras of pyproject.toml for this image: empty for the platform, `--extra notebook` for the compose
# `jupyter` service's image (JupyterLab, pandas, matplotlib).
ARG UV_EXTRAS=""
# pip only to fetch uv from PyPI; this stage is thrown away.
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    if ! python3 -m pip --version >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m pip install --no-cache-dir --root-user-action=ignore --break-system-packages \
        --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /app

# The environment depends on pyproject.toml and uv.lock only, so these layers (and the runtime
# stage's copy of /opt/venv, ~820 MB) are reused until the lock changes. First the locked
# dependencies, then the project itself, installed editable against a stub package: the .pth
# points at /app, where the real source lands below (settings.py finds sources.yml, dbt_project/
# and soda/ beside the package, so the code stays a source tree at /app).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi; \
    uv sync --frozen --no-dev --no-install-project ${UV_EXTRAS}
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi; \
    mkdir -p ratatouille_assets && touch README.md ratatouille_assets/__init__.py \
    && uv sync --frozen --no-dev ${UV_EXTRAS} \
    && rm -rf ratatouille_assets README.md

# The code, and the dbt manifest prepared at build time (the code location never parses): the
# dbt sources generated from sources.yml, then dbt parse.
COPY . .
RUN /opt/venv/bin/python -m compileall -q ratatouille_assets \
    && RATATOUILLE_HOME=/tmp/ratatouille /opt/venv/bin/python -m ratatouille_assets.project.manifest \
    && test -s dbt_project/target/manifest.json && rm -rf dbt_project/logs /tmp/ratatouille

# ---- runtime ------------------------------------------------------------------------------------
FROM python
# /home/ratatouille/notebooks: where the `jupyter` service keeps notebooks (a volume takes its owner).
RUN useradd --uid 10001 --user-group --home-dir /home/ratatouille --create-home --shell /usr/sbin/nologin ratatouille \
    && mkdir -p /opt/dagster/home/storage /opt/dagster/logs /var/lib/ratatouille /home/ratatouille/notebooks \
    && chown -R 10001:10001 /opt/dagster/home /opt/dagster/logs /var/lib/ratatouille /home/ratatouille
# Code and venv read-only for the app user; dbt_project/ writable: every dbt invocation writes its
# own target/<op>-<run>-<id>/ folder there.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
RUN chown -R 10001:10001 /app/dbt_project
# The server instance: Postgres storage from DAGSTER_PG_* (stack/dagster.yaml).
COPY --from=build /app/stack/dagster.yaml /opt/dagster/home/dagster.yaml
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_COMPUTE_LOG_DIR=/opt/dagster/logs \
    RATATOUILLE_HOME=/var/lib/ratatouille
WORKDIR /app
USER 10001
EXPOSE 4000
CMD ["dagster", "api", "grpc", "-m", "ratatouille_assets.definitions", "-h", "0.0.0.0", "-p", "4000"]
