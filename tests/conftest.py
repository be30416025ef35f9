pytest_plugins = ["proxy_fixtures", "pg_fixtures"]

import ssl

import pytest
import trustme

from agentprobe.fakeprovider import FakeProvider


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway CA: tests trust it explicitly instead of touching system trust."""
    return trustme.CA()


@pytest.fixture
def tls_ca_bundle(tls_ca, tmp_path) -> str:
    """Path (str, ready for SSL_CERT_FILE and friends) of a PEM file holding the CA certificate."""
    path = tmp_path / "fake-ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def fake_provider_tls(tls_ca):
    """A started FakeProvider over HTTPS, with a certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with FakeProvider(ssl_context=context) as provider:
        yield provider


@pytest.fixture
def fake_provider():
    """A started FakeProvider over plain HTTP."""
    with FakeProvider() as provider:
        yield provider
