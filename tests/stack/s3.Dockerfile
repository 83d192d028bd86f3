# TEST ONLY: an S3-protocol server in place of MinIO (CI has no container registry): moto's server
# from PyPI on a debootstrapped bookworm. It keeps MinIO's contract as docker-compose.yml uses it,
# so compose.test.yml only swaps the image: port 9000; MinIO's `server ...` command line (ignored);
# any credentials; and an `mc` stand-in (fake-mc.py: `mc ready local`, `mc alias set`, `mc mb`), so
# the same image also replaces minio/mc in the bucket-init service. Data is in memory.
# Behind a TLS-intercepting proxy pass its CA: --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=localhost/debian-base:bookworm
FROM ${BASE_IMAGE}
ARG MOTO_VERSION=5.2.5
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    python3 -m venv /opt/moto \
    && /opt/moto/bin/pip install --no-cache-dir --disable-pip-version-check "moto[server]==${MOTO_VERSION}" \
    && useradd --uid 10002 --no-create-home --shell /usr/sbin/nologin moto
COPY --chmod=755 fake-mc.py /usr/local/bin/mc
COPY --chmod=755 s3-entrypoint.sh /usr/local/bin/s3-entrypoint.sh
ENV PATH=/opt/moto/bin:$PATH
USER 10002
EXPOSE 9000
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/s3-entrypoint.sh"]
CMD ["server", "/data"]
