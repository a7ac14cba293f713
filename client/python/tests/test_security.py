"""token= and tls= end to end: a daemon with TLS (and mutual TLS) and bearer tokens, and the
errors a client gets without them (docs/daemon.md "Security")."""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import tempfile
from typing import Iterator

import grpc
import numpy as np
import pytest

import paramd
from conftest import SPECS, Daemon

ADMIN, READ = "py-admin-token-7d1e", "py-read-token-40c2"


def _certificates(root: pathlib.Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    (root / "server.ext").write_text("basicConstraints=CA:FALSE\n"
                                     "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (root / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    script = (
        f"openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=py-test-ca && "
        f"openssl req {ec} -keyout server.key -out server.csr -subj /CN=localhost && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile server.ext && "
        f"openssl req {ec} -keyout client.key -out client.csr -subj /CN=py-test-client && "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2 -extfile client.ext")
    subprocess.run(script, shell=True, cwd=root, check=True, capture_output=True)


def _hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def pki() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="paramd-python-tls-") as root:
        path = pathlib.Path(root)
        _certificates(path)
        (path / "tokens").write_text(f"admin admin {_hash(ADMIN)}\nreader read {_hash(READ)}\n")
        yield path


def _daemon(pki: pathlib.Path, root: str, *extra: str) -> Daemon:
    return Daemon(root, ("--auth-tokens", str(pki / "tokens"), *extra))


def _tls(pki: pathlib.Path, client_cert: bool = False) -> grpc.ChannelCredentials:
    if client_cert:
        return grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(),
                                            (pki / "client.key").read_bytes(),
                                            (pki / "client.pem").read_bytes())
    return grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())


def _check_roles(address: str, tls: object) -> None:
    with paramd.connect(address, token=ADMIN, tls=tls, timeout=30) as admin:  # type: ignore[arg-type]
        model = admin.create("m", SPECS / "mlp.json")
        assert [m.name for m in admin.models()] == ["m"]
        version = model.version
        # A stream carries the token too.
        assert list(model.state_dict())
        with paramd.connect(address, token=READ, tls=tls, timeout=30) as reader:  # type: ignore[arg-type]
            assert [m.name for m in reader.models()] == ["m"]
            assert list(reader.model("m").state_dict()) == list(model.state_dict())
            with pytest.raises(paramd.PermissionDenied, match="needs role 'admin'"):
                reader.create("x", SPECS / "mlp.json")
            with pytest.raises(paramd.PermissionDenied, match="needs role 'write'"):
                reader.model("m").set("w2", np.array([9.0], np.float32))
        for token in (None, "not-a-token"):
            with paramd.connect(address, token=token, tls=tls, timeout=30) as other:  # type: ignore[arg-type]
                with pytest.raises(paramd.Unauthenticated):
                    other.models()
                assert other.health() == "SERVING"  # health stays open
        assert model.version == version
        assert [m.name for m in admin.models()] == ["m"]


def test_token_and_tls(pki: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(prefix="paramd-python-") as root:
        daemon = _daemon(pki, root, "--tls-cert", str(pki / "server.pem"),
                         "--tls-key", str(pki / "server.key"))
        try:
            _check_roles(daemon.address, _tls(pki))
        finally:
            daemon.stop()


def test_token_and_mutual_tls(pki: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(prefix="paramd-python-") as root:
        daemon = _daemon(pki, root, "--tls-cert", str(pki / "server.pem"),
                         "--tls-key", str(pki / "server.key"), "--tls-client-ca",
                         str(pki / "ca.pem"))
        try:
            _check_roles(daemon.address, _tls(pki, client_cert=True))
            with paramd.connect(daemon.address, token=ADMIN, tls=_tls(pki),
                                timeout=5) as no_cert:
                with pytest.raises(paramd.Unavailable):
                    no_cert.models()
        finally:
            daemon.stop()


def test_token_over_plaintext_loopback(pki: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(prefix="paramd-python-") as root:
        daemon = _daemon(pki, root)
        try:
            _check_roles(daemon.address, None)
        finally:
            daemon.stop()
