"""TLS and bearer-token settings of the model server (safe defaults the real server lacks)."""

from __future__ import annotations

import hmac
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc

from serving.config import read_ssl_config

BEARER = "bearer "


@dataclass(frozen=True)
class TlsConfig:
    """PEM server key and certificate, and optionally a CA that client certificates need."""

    key: bytes
    cert: bytes
    client_ca: bytes | None = None
    client_verify: bool = False

    @classmethod
    def from_ssl_config_file(cls, path: str | os.PathLike) -> TlsConfig:
        """TF Serving's `--ssl_config_file` (an `SSLConfig` text proto holding PEM text)."""
        config = read_ssl_config(path)
        return cls(
            key=config.server_key.encode(),
            cert=config.server_cert.encode(),
            client_ca=config.custom_ca.encode() or None,
            client_verify=config.client_verify,
        )

    @classmethod
    def from_files(cls, cert: str | os.PathLike, key: str | os.PathLike) -> TlsConfig:
        """`--ssl_cert CERT.pem --ssl_key KEY.pem`."""
        return cls(key=_read(key, "--ssl_key"), cert=_read(cert, "--ssl_cert"))

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_verify,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context for the REST port (same key, certificate and client CA)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The ssl module loads keys from files only: write them to a private temporary folder.
        with tempfile.TemporaryDirectory() as folder:
            cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
            key_path.touch(mode=0o600)
            key_path.write_bytes(self.key)
            cert_path.write_bytes(self.cert)
            context.load_cert_chain(cert_path, key_path)
        if self.client_ca:
            context.load_verify_locations(cadata=self.client_ca.decode())
        if self.client_verify:
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def _read(path: str | os.PathLike, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{flag}: cannot read {path}: {error.strerror}") from error


def read_token(path: str | os.PathLike) -> str:
    """The bearer token of `--auth_token_file` (surrounding whitespace ignored)."""
    token = _read(path, "--auth_token_file").decode().strip()
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"--auth_token_file {path}: must hold one token without spaces")
    return token


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``authorization`` value is ``Bearer <token>`` (constant-time comparison)."""
    if not authorization or not authorization.lower().startswith(BEARER):
        return False
    offered = authorization[len(BEARER) :].strip()
    return hmac.compare_digest(offered.encode(), token.encode())
