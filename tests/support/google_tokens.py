"""Google-style ID tokens signed by a key made in the test, with its certificate served over
local HTTP, so the production verifier (google-auth) runs unchanged against them."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


class GoogleTokenIssuer:
    """Signs RS256 ID tokens and serves `{kid: certificate PEM}` like Google's certs endpoint."""

    def __init__(self, kid: str = "test-key-1") -> None:
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-google")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        certs = {kid: cert.public_bytes(serialization.Encoding.PEM).decode()}
        body = json.dumps(certs).encode()
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.certs_url = f"http://127.0.0.1:{self._server.server_address[1]}/certs"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def token(
        self,
        *,
        sub: str,
        aud: str,
        iss: str = "https://accounts.google.com",
        ttl_s: int = 600,
        email: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        from google.auth import crypt, jwt

        pem = (key or self._key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = crypt.RSASigner.from_string(pem, key_id=self.kid)
        now = int(time.time())
        payload = {"sub": sub, "aud": aud, "iss": iss, "iat": now - 5, "exp": now + ttl_s}
        if email:
            payload["email"] = email
            payload["email_verified"] = True  # as in Google's tokens for service accounts
        payload.update(claims)
        return jwt.encode(signer, payload).decode()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class IapTokenIssuer:
    """Signs ES256 assertions as Identity-Aware Proxy does (`x-goog-iap-jwt-assertion`) with a
    P-256 key made in the test, and serves its public key as a JWK set over local HTTP, like
    https://www.gstatic.com/iap/verify/public_key-jwk, so the verifier runs unchanged."""

    ISSUER = "https://cloud.google.com/iap"

    def __init__(self, kid: str = "iap-test-key") -> None:
        import base64

        from cryptography.hazmat.primitives.asymmetric import ec

        self.kid = kid
        self._key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()

        def b64(n: int) -> str:
            return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

        jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
               "x": b64(numbers.x), "y": b64(numbers.y)}
        body = json.dumps({"keys": [jwk]}).encode()
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.certs_url = f"http://127.0.0.1:{self._server.server_address[1]}/public_key-jwk"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def assertion(self, *, sub: str, aud: str, email: str | None = None,
                  iss: str = ISSUER, ttl_s: int = 600, key: Any = None,
                  alg: str = "ES256") -> str:
        import jwt

        now = int(time.time())
        payload: dict[str, Any] = {"sub": sub, "aud": aud, "iss": iss, "iat": now - 5,
                                   "exp": now + ttl_s}
        if email:
            payload["email"] = email
        signing = key or self._key
        return jwt.encode(payload, signing, algorithm=alg, headers={"kid": self.kid})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
