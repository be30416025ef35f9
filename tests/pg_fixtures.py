"""pytest fixtures for the PostgreSQL backend: one real server per test session, a fresh database per test."""

from __future__ import annotations

import os

import pytest

from pg_server import INSTALL, PgServer, base_of, find_bindir, new_database


@pytest.fixture(scope="session")
def pg_base_url():
    """postgresql://user@127.0.0.1:PORT of a running server (no database part)."""
    given = os.environ.get("AGENTPROBE_TEST_PG_URL")
    if given:
        yield base_of(given)
        return
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(f"the PostgreSQL tests need a PostgreSQL server and found no initdb: {INSTALL}")
    server = PgServer(bindir)
    try:
        yield server.base_url()
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_server_control(pg_base_url):
    """A server this session may stop and start (outage tests): its own, never $AGENTPROBE_TEST_PG_URL's."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(f"the PostgreSQL outage tests start their own server and found no initdb: {INSTALL}")
    server = PgServer(bindir)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_base_url) -> str:
    """A fresh, empty database on the session's server."""
    return new_database(pg_base_url)
