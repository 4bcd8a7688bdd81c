"""Registry fixtures: every registry test runs against SQLite and against a real PostgreSQL
server, each test in a fresh database.

PostgreSQL: ``RLSEC_TEST_PG`` is a URL of a role allowed to create databases (``.ci/run``
sets it after installing and starting Debian's server). Without it, as root on a machine
with Debian's ``postgresql`` package, the fixture starts the first cluster and creates that
role itself. Where neither works the PostgreSQL cases are skipped, except under ``CI``,
where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_helpers import Team
from rlsec.registry import Registry

PG_ENV = "RLSEC_TEST_PG"
_ROLE, _PASSWORD = "rlsec_test", "rlsec_test"


def _start_debian_cluster() -> str | None:
    """Start Debian's first PostgreSQL cluster and make the test role; its URL, or None."""
    if not shutil.which("pg_lsclusters") or os.geteuid() != 0:
        return None
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    ).stdout.split()
    if len(listing) < 3:
        return None
    version, cluster, port = listing[0], listing[1], listing[2]
    subprocess.run(["pg_ctlcluster", version, cluster, "start"], capture_output=True, check=False)
    create = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{_ROLE}') THEN "
        f"CREATE ROLE {_ROLE} LOGIN CREATEDB PASSWORD '{_PASSWORD}'; END IF; END $$;"
    )
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-p", port, "-qc", create],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0 and b"already exists" not in done.stderr:
        return None
    return f"postgresql://{_ROLE}:{_PASSWORD}@127.0.0.1:{port}/postgres"


@pytest.fixture(scope="session")
def pg_server() -> str:
    url = os.environ.get(PG_ENV) or _start_debian_cluster()
    if url is None:
        why = f"no PostgreSQL server: set {PG_ENV} or install Debian's postgresql package"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return url


def _admin_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the server, dropped afterwards."""
    name = f"rlsec_{uuid.uuid4().hex[:12]}"
    with _admin_connect(pg_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_server.rpartition("/")
    yield f"{base}/{name}"
    with _admin_connect(pg_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def registry(tmp_path: Path, db_url: str) -> Registry:
    return Registry(tmp_path / "home", db_url)


@pytest.fixture
def team(registry: Registry) -> Team:
    return Team(registry)
