"""A real, local Kubernetes control plane for tests and demos: etcd + kube-apiserver.

The binaries are the real ones, built from the Go module proxy by ``make envtest``
(``tools/envtest.sh``) into ``${XDG_CACHE_HOME:-~/.cache}/rankexp/<k8s-version>/bin``.
:class:`LocalCluster` starts them in a fresh temporary directory:

* certificates made with ``cryptography``: a CA, a serving certificate for
  ``127.0.0.1``/``localhost``, a service-account signing key pair and an admin
  client certificate in group ``system:masters``;
* etcd on two free loopback ports (plain HTTP, loopback only, no fsync: test data);
* kube-apiserver on a free loopback port (``--bind-address=127.0.0.1``,
  ``--advertise-address=127.0.0.1``), RBAC authorisation, lean admission
  (no ``ServiceAccount`` plugin, so pods get no token volumes);
* a kubeconfig for the admin user.

It waits until ``/readyz`` answers ``ok`` and the ``default`` namespace exists, and
on exit (also on an exception) stops every process (SIGTERM to its process group,
then SIGKILL) and removes the directory.

What is NOT there: no kube-controller-manager, no scheduler, no kubelet. So nothing
runs pods, owner-reference garbage collection never happens (deleting an owner
leaves its children), a deleted namespace stays ``Terminating`` forever, and
Deployments get no ReplicaSets. Later pieces add more processes to the same
runner through :meth:`LocalCluster.add_process` (e.g. Prometheus, the ranker
runner); they are stopped with the cluster, before it, in reverse order.

For people::

    python -m rankexp.local.cluster up

prints ``export KUBECONFIG=<path>`` as its first line and serves until SIGINT or
SIGTERM, then cleans up.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import datetime as dt
import http.client
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "K8S_VERSION",
    "BinariesMissingError",
    "ClusterStartError",
    "KubectlError",
    "LocalCluster",
    "Process",
    "ProcessExitedError",
    "build_binaries",
    "cache_root",
    "ensure_binaries",
    "envtest_version",
    "find_binaries",
    "free_ports",
    "main",
    "wait_for",
]

log = logging.getLogger("rankexp.local.cluster")

#: The Kubernetes release tools/envtest/go.mod builds. When the module runs from a
#: source tree, that go.mod is read instead; a test keeps the two equal.
K8S_VERSION = "v1.36.3"
BINARIES = ("kube-apiserver", "kubectl", "etcd")
#: Points at a directory holding the three binaries, instead of the cache.
BIN_DIR_ENV = "RANKEXP_ENVTEST_BIN_DIR"

_REPO_ROOT = Path(__file__).resolve().parents[3]
_ENVTEST_SCRIPT = _REPO_ROOT / "tools" / "envtest.sh"
_ENVTEST_GOMOD = _REPO_ROOT / "tools" / "envtest" / "go.mod"
_HOST = "127.0.0.1"
# Loopback requests must not go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- binaries


class BinariesMissingError(FileNotFoundError):
    """The control-plane binaries are not in the cache: run ``make envtest``."""


def envtest_version() -> str:
    """The Kubernetes version of the binaries: from tools/envtest/go.mod when present."""
    try:
        text = _ENVTEST_GOMOD.read_text()
    except OSError:
        return K8S_VERSION
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+)\b", text, re.MULTILINE)
    return match.group(1) if match else K8S_VERSION


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-$HOME/.cache}/rankexp``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "rankexp"


def find_binaries(version: str | None = None) -> Path:
    """The directory holding kube-apiserver, kubectl and etcd.

    ``$RANKEXP_ENVTEST_BIN_DIR`` wins when set; otherwise the ``make envtest`` cache
    for ``version`` (default: :func:`envtest_version`). Raises
    :class:`BinariesMissingError` saying to run ``make envtest`` when any is missing.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        bin_dir = Path(override)
        origin = f"${BIN_DIR_ENV}={override}"
    else:
        bin_dir = cache_root() / (version or envtest_version()) / "bin"
        origin = "the envtest cache"
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise BinariesMissingError(
            f"{', '.join(missing)} not found in {bin_dir} ({origin}). Run `make envtest` "
            "(bash tools/envtest.sh) to build kube-apiserver, kubectl and etcd from the Go "
            "module proxy into the cache; a cold build takes several minutes."
        )
    return bin_dir


def build_binaries(script: Path = _ENVTEST_SCRIPT) -> Path:
    """Run tools/envtest.sh (a no-op taking seconds when the cache is good).

    Its progress goes to this process's stderr; returns the bin directory it prints.
    """
    if not script.is_file():
        raise BinariesMissingError(
            f"{script} not found: build the binaries with `make envtest` in a rankexp clone"
        )
    result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise BinariesMissingError(
            f"bash {script} failed with exit code {result.returncode} (see its stderr above)"
        )
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise BinariesMissingError(f"bash {script} printed no bin directory")
    return Path(lines[-1])


def ensure_binaries() -> Path:
    """:func:`find_binaries`, building them with tools/envtest.sh when missing."""
    try:
        return find_binaries()
    except BinariesMissingError:
        if os.environ.get(BIN_DIR_ENV):
            raise
        log.warning("control-plane binaries missing: building them with %s", _ENVTEST_SCRIPT)
    build_binaries()
    return find_binaries()


# -------------------------------------------------------------------------- processes


_PR_SET_PDEATHSIG = 1
try:  # resolved here, not in the forked child, where loading a library is unsafe
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, even by SIGKILL,
    so a killed test run or CLI leaves no servers behind."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessExitedError(RuntimeError):
    """A managed process exited while it should be running."""


class Process:
    """One long-running child process with its output in a log file.

    It runs in its own session (process group), so a terminal's Ctrl-C reaches only
    the Python parent, which stops children in order; :meth:`stop` signals the
    whole group. Generic on purpose: any server (Prometheus, a ranker) fits.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        log.debug("starting %s: %s", self.name, " ".join(self.argv))
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def ensure_running(self) -> None:
        """Raise :class:`ProcessExitedError` (with the log's tail) unless it runs."""
        if self._popen is None:
            raise ProcessExitedError(f"{self.name} was never started")
        code = self._popen.poll()
        if code is not None:
            raise ProcessExitedError(
                f"{self.name} exited with code {code}; last lines of {self.log_path}:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            data = self.log_path.read_bytes()[-16384:]
        except OSError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL and wait."""
        popen = self._popen
        try:
            if popen is not None and popen.poll() is None:
                self._signal_group(popen, signal.SIGTERM)
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored SIGTERM for %.0f s: killing it", self.name, timeout)
                    self._signal_group(popen, signal.SIGKILL)
                    popen.wait(timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def kill(self) -> None:
        """SIGKILL the process group (a crash: no shutdown code runs) and reap it."""
        popen = self._popen
        try:
            if popen is not None and popen.poll() is None:
                self._signal_group(popen, signal.SIGKILL)
                popen.wait(10)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    @staticmethod
    def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # Only while the leader is unreaped: its pid (= the group id) cannot be reused.
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            popen.send_signal(sig)


def wait_for(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    processes: Sequence[Process] = (),
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it is true; fail early when one of ``processes`` exits.

    Exceptions from ``check`` count as "not yet". Raises :class:`TimeoutError`.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        for proc in processes:
            proc.ensure_running()
        try:
            if check():
                return
        except Exception as exc:  # not ready yet: connection refused, 500, ...
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            tails = "".join(
                f"\n--- last lines of {p.name} ({p.log_path}):\n{p.log_tail()}" for p in processes
            )
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s{detail}{tails}")
        time.sleep(interval)


def free_ports(count: int, host: str = _HOST) -> list[int]:
    """``count`` distinct free TCP ports on ``host`` (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


# ------------------------------------------------------------------------------ certs


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class _Pki:
    """CA, apiserver serving cert, service-account keys and admin client cert."""

    def __init__(self, directory: Path, days: int = 365) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self._not_before = now - dt.timedelta(hours=1)
        self._not_after = now + dt.timedelta(days=days)

        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rankexp-local-ca")])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca_cert = (
            self._builder(ca_name, ca_name, self.ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_crt = self._write("ca.crt", _pem_cert(self.ca_cert))
        self._write("ca.key", _pem_key(self.ca_key))

        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address(_HOST)),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ]
        self.serving_crt, self.serving_key = self._leaf(
            "serving", "kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, sans
        )
        self.admin_crt, self.admin_key = self._leaf(
            "admin", "rankexp-admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH, []
        )

        sa_key = ec.generate_private_key(ec.SECP256R1())
        self.sa_key = self._write("sa.key", _pem_key(sa_key))
        self.sa_pub = self._write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def _builder(
        self, subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
        )

    def _leaf(
        self,
        stem: str,
        common_name: str,
        organization: str | None,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        builder = (
            self._builder(x509.Name(attrs), self.ca_cert.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return self._write(f"{stem}.crt", _pem_cert(cert)), self._write(
            f"{stem}.key", _pem_key(key)
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# ---------------------------------------------------------------------------- cluster


class ClusterStartError(RuntimeError):
    """etcd or kube-apiserver did not come up."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; the message includes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"


class LocalCluster:
    """etcd + kube-apiserver on 127.0.0.1 free ports, in a temporary directory.

    Use as a context manager (or :meth:`start` / :meth:`stop`)::

        with LocalCluster() as cluster:
            cluster.kubectl("get", "ns")

    Attributes (valid once started): ``kubeconfig`` (admin kubeconfig path),
    ``server`` (``https://127.0.0.1:<port>``), ``workdir`` (the temporary directory:
    ``pki/``, ``etcd/``, ``logs/``, ``kubeconfig``), ``bin_dir`` (the binaries),
    ``ca_crt``, ``etcd_url``, ``processes``.

    There is no controller-manager: owner-reference garbage collection, namespace
    deletion, Deployment -> ReplicaSet -> Pod and every other controller do not
    happen. Add further processes (Prometheus, ...) with :meth:`add_process`.
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        startup_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else find_binaries()
        self._own_workdir = workdir is None
        self._requested_workdir = workdir
        self.keep_workdir = keep_workdir
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.processes: list[Process] = []
        self._workdir: Path | None = None
        self._kubeconfig: Path | None = None
        self._server: str | None = None
        self.etcd_url = ""
        self.ca_crt = Path()
        self._pki: _Pki | None = None
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    # ---- attributes that exist once started
    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the cluster is not started")
        return self._workdir

    @property
    def kubeconfig(self) -> Path:
        if self._kubeconfig is None:
            raise RuntimeError("the cluster is not started")
        return self._kubeconfig

    @property
    def server(self) -> str:
        if self._server is None:
            raise RuntimeError("the cluster is not started")
        return self._server

    # ---- lifecycle
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and kube-apiserver and wait until both are ready."""
        if self._started:
            raise RuntimeError("the cluster was already started")
        self._started = True
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            if self._requested_workdir is not None:
                self._workdir = self._requested_workdir
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="rankexp-cluster-"))
            self._pki = _Pki(self.workdir / "pki")
            self.ca_crt = self._pki.ca_crt
            self._ssl = ssl.create_default_context(cafile=str(self._pki.ca_crt))
            self._ssl.load_cert_chain(str(self._pki.admin_crt), str(self._pki.admin_key))
            self._start_with_retries()
            self._kubeconfig = self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        log.info("local cluster ready at %s in %.1f s", self.server, time.monotonic() - t0)

    def _start_with_retries(self, attempts: int = 3) -> None:
        # Free ports are chosen before the servers bind them; another process may win
        # the race. Then the server exits at once and we try again with new ports.
        for attempt in range(1, attempts + 1):
            etcd_port, peer_port, api_port = free_ports(3)
            try:
                self._start_etcd(etcd_port, peer_port)
                self._start_apiserver(api_port)
                return
            except (ProcessExitedError, TimeoutError) as exc:
                in_use = "address already in use" in str(exc).lower()
                self._stop_processes()
                if attempt == attempts or not in_use:
                    raise ClusterStartError(str(exc)) from exc
                log.warning("port taken while starting (attempt %d): retrying", attempt)

    def _start_etcd(self, client_port: int, peer_port: int) -> None:
        client = f"http://{_HOST}:{client_port}"
        peer = f"http://{_HOST}:{peer_port}"
        data_dir = self.workdir / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)
        proc = Process(
            "etcd",
            [
                self.bin_dir / "etcd",
                "--name=rankexp",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=rankexp={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # test data: speed over durability
                "--log-level=warn",
            ],
            log_path=self.workdir / "logs" / "etcd.log",
        )
        self.add_process(proc)
        self.etcd_url = client

        def healthy() -> bool:
            with _NO_PROXY.open(f"{client}/health", timeout=2) as resp:
                return bool(json.load(resp).get("health") == "true")

        wait_for(healthy, timeout=self.startup_timeout, what="etcd", processes=[proc])

    def _start_apiserver(self, port: int) -> None:
        assert self._pki is not None
        pki = self._pki
        self._server = f"https://{_HOST}:{port}"
        proc = Process(
            "kube-apiserver",
            [
                self.bin_dir / "kube-apiserver",
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={_HOST}",
                f"--advertise-address={_HOST}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver'}",
                f"--tls-cert-file={pki.serving_crt}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_crt}",
                f"--service-account-issuer={self._server}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/16",  # room for a thousand Experiments
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",  # no Endpoints for 127.0.0.1 (invalid)
                "--enable-priority-and-fairness=false",
                "--allow-privileged=true",
                "--profiling=false",
                *self.extra_apiserver_args,
            ],
            log_path=self.workdir / "logs" / "kube-apiserver.log",
        )
        self.add_process(proc)
        wait_for(
            lambda: self._get("/readyz") == 200 and self._get("/api/v1/namespaces/default") == 200,
            timeout=self.startup_timeout,
            what="kube-apiserver",
            processes=list(self.processes),
        )

    def _get(self, path: str) -> int:
        """Status of an admin GET to the apiserver (raises on connection errors)."""
        conn = http.client.HTTPSConnection(
            _HOST, int(self.server.rsplit(":", 1)[1]), context=self._ssl, timeout=5
        )
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def _write_kubeconfig(self) -> Path:
        assert self._pki is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "rankexp-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self._pki.ca_crt),
                    },
                }
            ],
            "users": [
                {
                    "name": "rankexp-admin",
                    "user": {
                        "client-certificate-data": _b64(self._pki.admin_crt),
                        "client-key-data": _b64(self._pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "rankexp-local",
                    "context": {
                        "cluster": "rankexp-local",
                        "user": "rankexp-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "rankexp-local",
        }
        path = self.workdir / "kubeconfig"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        return path

    def add_process(self, proc: Process, *, start: bool = True) -> Process:
        """Manage ``proc`` with the cluster: started now (by default), stopped on exit
        before the processes added earlier."""
        self.processes.append(proc)
        if start:
            proc.start()
        return proc

    def restart_apiserver(self, downtime: float = 3.0) -> float:
        """Stop kube-apiserver (SIGTERM), keep it down ``downtime`` seconds, start it again
        on the same port with the same etcd and certificates, and wait until it is ready.
        Clients see connection errors meanwhile, then the same server. Returns the
        seconds it was unreachable."""
        index = next(i for i, p in enumerate(self.processes) if p.name == "kube-apiserver")
        old = self.processes[index]
        t0 = time.monotonic()
        old.stop()
        time.sleep(downtime)
        new = Process(old.name, old.argv, log_path=old.log_path, env=old.env, cwd=old.cwd)
        new.start()
        self.processes[index] = new
        wait_for(
            lambda: self._get("/readyz") == 200,
            timeout=self.startup_timeout,
            what="kube-apiserver after a restart",
            processes=[new],
        )
        return time.monotonic() - t0

    def check(self) -> None:
        """Raise :class:`ProcessExitedError` when any managed process has exited."""
        for proc in self.processes:
            proc.ensure_running()

    def _stop_processes(self) -> None:
        while self.processes:
            proc = self.processes.pop()
            try:
                proc.stop()
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", proc.name)

    def stop(self) -> None:
        """Stop every process (last added first) and remove the temporary directory.

        Safe to call more than once."""
        atexit.unregister(self.stop)
        self._stop_processes()
        if self._workdir is not None and self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # ---- clients
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` for this cluster, for child processes."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against this cluster; output is captured as text.

        With ``check`` a non-zero exit raises :class:`KubectlError` (stderr included).
        """
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        env = {**os.environ, "KUBECACHEDIR": str(self.workdir / "kubectl-cache")}
        env.pop("KUBECONFIG", None)
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def kubectl_json(self, *args: str) -> Any:
        """``kubectl ... -o json`` parsed."""
        return json.loads(self.kubectl(*args, "-o", "json").stdout)


# -------------------------------------------------------------------------------- CLI


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Once: the cleanup that follows must not be interrupted by a second signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stop(signum)


def _up(args: argparse.Namespace) -> int:
    out = sys.stdout
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        bin_dir = Path(args.bin_dir) if args.bin_dir else find_binaries()
        with LocalCluster(bin_dir, keep_workdir=args.keep) as cluster:
            out.write(f"export KUBECONFIG={cluster.kubeconfig}\n")
            out.write(f"# kube-apiserver {cluster.server} ({envtest_version()})\n")
            out.write(f"# kubectl: {cluster.bin_dir / 'kubectl'}\n")
            out.write(f"# workdir: {cluster.workdir}\n")
            out.write("# running until Ctrl-C / SIGTERM\n")
            out.flush()
            while True:
                time.sleep(1.0)
                cluster.check()
    except _Stop as stop:
        log.info("%s: stopped", stop)
        return 0
    except BinariesMissingError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except (ClusterStartError, ProcessExitedError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rankexp.local.cluster",
        description="Run a local etcd + kube-apiserver on 127.0.0.1 (binaries: make envtest).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="start, print `export KUBECONFIG=...` first, serve until SIGINT/SIGTERM, clean up",
    )
    up.add_argument("--bin-dir", help="directory with kube-apiserver, kubectl, etcd")
    up.add_argument("--keep", action="store_true", help="keep the temporary directory")
    sub.add_parser("bin-dir", help="print the binaries' directory (error when missing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if args.command == "bin-dir":
        try:
            sys.stdout.write(f"{find_binaries()}\n")
        except BinariesMissingError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        return 0
    return _up(args)


if __name__ == "__main__":
    sys.exit(main())
