"""Real servers for ranker.storage on 127.0.0.1: versitygw (S3 over a temp directory) and
an HTTPS file server with a CA made here.

versitygw is built by tools/versitygw.sh (Go module proxy, cached outside the clone)
right after collection, outside any test, so the per-test timeout never cuts a cold
build short; a failed build fails the tests that need it. The session's server holds a
bucket ``models`` with the checkout's models/v2 under ``v2/``, uploaded through the S3
API (PUT, SigV4) like any client would.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3

from ranker.storage.sigv4 import sign
from rankexp.local.process import Process, free_ports, wait_for

REPO = Path(__file__).resolve().parents[3]
BUCKET = "models"
ACCESS_KEY = "rankexp-test"
SECRET_KEY = "rankexp-test-secret-0123456789"

_build: dict[str, object] = {}


def _build_versitygw() -> Path:
    built = subprocess.run(["bash", str(REPO / "tools" / "versitygw.sh")],
                           capture_output=True, text=True, timeout=3600, check=False)  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(f"tools/versitygw.sh failed:\n{built.stderr[-3000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any("s3_server" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    try:
        _build["binary"] = _build_versitygw()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        _build["error"] = exc


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    root: Path  # the directory versitygw serves (buckets are its subdirectories)
    process: Process
    http: urllib3.PoolManager

    @property
    def host(self) -> str:
        return self.endpoint.split("://", 1)[1]

    def request(self, method: str, path: str, body: object = None,
                headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:  # fmt: skip
        signed = sign(method, self.host, path, {}, headers or {}, access_key=ACCESS_KEY,
                      secret_key=SECRET_KEY, region="us-east-1",
                      payload_hash="UNSIGNED-PAYLOAD")  # fmt: skip
        return self.http.request(method, self.endpoint + path, body=body, headers=signed)

    def create_bucket(self, bucket: str) -> None:
        resp = self.request("PUT", f"/{bucket}")
        assert resp.status == 200, (resp.status, resp.data[:500])

    def put_file(self, bucket: str, key: str, path: Path) -> None:
        with path.open("rb") as f:
            resp = self.request("PUT", f"/{bucket}/{key}", body=f,
                                headers={"content-length": str(path.stat().st_size)})  # fmt: skip
        assert resp.status == 200, (resp.status, resp.data[:500])

    def put_dir(self, bucket: str, prefix: str, src: Path) -> None:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            self.put_file(bucket, prefix + path.relative_to(src).as_posix(), path)

    def credentials(self, where: Path, **override: str) -> Path:
        """A directory laid out like a mounted Secret for this server."""
        values = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "S3_ADDRESSING_STYLE": "path",
            **override,
        }
        where.mkdir(parents=True, exist_ok=True)
        for key, value in values.items():
            (where / key).write_text(value + "\n")
        return where


def start_versitygw(
    binary: Path, data: Path, log_dir: Path, tls: tuple[Path, Path, str] | None = None
) -> S3Server:
    """versitygw serving ``data``; with ``tls`` (certificate, key, CA PEM) over https."""
    (port,) = free_ports(1)
    data.mkdir(parents=True, exist_ok=True)
    scheme, extra, http = "http", [], urllib3.PoolManager()
    if tls:
        cert, key, ca_pem = tls
        scheme, extra = "https", ["--cert", str(cert), "--key", str(key)]
        http = urllib3.PoolManager(ssl_context=ssl.create_default_context(cadata=ca_pem))
    proc = Process(
        f"versitygw-{port}",
        [binary, "--access", ACCESS_KEY, "--secret", SECRET_KEY, *extra,
         "--port", f"127.0.0.1:{port}", "--region", "us-east-1", "--quiet", "posix", data],
        log_path=log_dir / f"versitygw-{port}.log",
    )  # fmt: skip
    proc.start()
    server = S3Server(f"{scheme}://127.0.0.1:{port}", data, proc, http)
    try:
        # any S3 answer (an anonymous request is refused) means it serves
        wait_for(lambda: server.http.request("GET", server.endpoint + "/", retries=False).status
                 in (200, 403), timeout=30, what="versitygw", processes=[proc])  # fmt: skip
    except BaseException:
        proc.stop()
        raise
    return server


@pytest.fixture(scope="session")
def versitygw_binary() -> Path:
    if "error" in _build:
        pytest.fail(f"building versitygw failed: {_build['error']}")
    binary = _build.get("binary")
    return binary if isinstance(binary, Path) else _build_versitygw()


@pytest.fixture(scope="session")
def s3_server(
    versitygw_binary: Path, tmp_path_factory: pytest.TempPathFactory, model_dirs: dict[str, Path]
) -> Iterator[S3Server]:
    """versitygw on a free 127.0.0.1 port over a temp dir; models/v2 at s3://models/v2/."""
    root = tmp_path_factory.mktemp("versitygw")
    server = start_versitygw(versitygw_binary, root / "data", root)
    try:
        server.create_bucket(BUCKET)
        server.put_dir(BUCKET, "v2/", model_dirs["v2"])
        yield server
    finally:
        server.process.stop()
        server.http.clear()


# ------------------------------------------------------------- the command under test


def fetch(
    uri: str, target: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`ranker fetch-model` as its own process, as the init container runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ranker.cli", "fetch-model", uri, str(target), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("ranker fetch-model: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def nothing_left(target: Path) -> None:
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


# ------------------------------------------------------------------ HTTPS, with our own CA


@dataclass
class HTTPSServer:
    url: str  # https://127.0.0.1:PORT
    root: Path  # the directory it serves
    ca_pem: str


def make_ca_and_server_cert(where: Path) -> tuple[str, Path, Path]:
    """A CA (PEM text) and a server certificate and key for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rankexp test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    where.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = where / "server.crt", where / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    os.chmod(key_path, 0o600)
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_path, key_path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@dataclass
class PKI:
    ca_pem: str
    cert: Path  # for 127.0.0.1, signed by the CA
    key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A CA made for the session and a server certificate for 127.0.0.1 it signed."""
    return PKI(*make_ca_and_server_cert(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session")
def https_server(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[HTTPSServer]:
    """Python's http.server behind TLS with the session CA's certificate, serving a temp
    directory (tests put their archives there)."""
    base = tmp_path_factory.mktemp("https")
    ca_pem, cert, key = pki.ca_pem, pki.cert, pki.key
    root = base / "www"
    root.mkdir()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield HTTPSServer(f"https://127.0.0.1:{server.server_address[1]}", root, ca_pem)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A real socket on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # read nothing, answer nothing, keep it open

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
