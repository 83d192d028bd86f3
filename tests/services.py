"""Real servers on loopback for the server-stack tests: an S3-protocol server and PostgreSQL.

- S3: moto's ``ThreadedMotoServer`` speaks the S3 protocol over HTTP on 127.0.0.1 (no MinIO
  binary can be installed here); pyiceberg, DuckDB httpfs and boto3 all talk to it as to MinIO.
- PostgreSQL: a throwaway cluster from Debian's ``postgresql`` package (``make postgres``
  installs it), ``initdb`` into a temporary folder, on a free port, stopped at the end. As root
  the server runs as the ``postgres`` user (it refuses to run as root).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
        )


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        # Recognisable, random credentials: the secret-leak test searches for them.
        yield S3Server(f"http://127.0.0.1:{port}", "AKIA" + secrets.token_hex(8).upper(), "sk-" + secrets.token_hex(16))
    finally:
        server.stop()


@dataclasses.dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return name


def pg_bin() -> str:
    found = sorted(glob.glob(PG_BIN_GLOB))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run `make postgres` "
            "(installs Debian's postgresql package)."
        )
    return found[-1]


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    bin_dir = pg_bin()
    as_root = os.geteuid() == 0
    base = tempfile.mkdtemp(prefix="ratatouille-pg-")
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.makedirs(sock)
    password = "pg-" + secrets.token_hex(8)
    pwfile = os.path.join(base, "pw")
    with open(pwfile, "w") as f:
        f.write(password)
    if as_root:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")

    def run(*argv: str) -> None:
        cmd = (["runuser", "-u", "postgres", "--"] if as_root else []) + list(argv)
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    port = free_port()
    run(f"{bin_dir}/initdb", "-D", data, "-U", "ratatouille", f"--pwfile={pwfile}", "-A", "scram-sha-256",
        "--no-sync", "-E", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c max_connections=200"
    run(f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(base, "log"), "-w", "start")
    try:
        yield Postgres("127.0.0.1", port, "ratatouille", password)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
