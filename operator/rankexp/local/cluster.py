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
import http.client
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml

from rankexp.local.binaries import BinariesMissingError, envtest_version, find_binaries
from rankexp.local.pki import Pki, b64
from rankexp.local.process import HOST, NO_PROXY, Process, ProcessExitedError, free_ports, wait_for

log = logging.getLogger("rankexp.local.cluster")


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
        self._pki: Pki | None = None
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
            self._pki = Pki(self.workdir / "pki")
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
        client = f"http://{HOST}:{client_port}"
        peer = f"http://{HOST}:{peer_port}"
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
            with NO_PROXY.open(f"{client}/health", timeout=2) as resp:
                return bool(json.load(resp).get("health") == "true")

        wait_for(healthy, timeout=self.startup_timeout, what="etcd", processes=[proc])

    def _start_apiserver(self, port: int) -> None:
        assert self._pki is not None
        pki = self._pki
        self._server = f"https://{HOST}:{port}"
        proc = Process(
            "kube-apiserver",
            [
                self.bin_dir / "kube-apiserver",
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
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
            HOST, int(self.server.rsplit(":", 1)[1]), context=self._ssl, timeout=5
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
                        "certificate-authority-data": b64(self._pki.ca_crt),
                    },
                }
            ],
            "users": [
                {
                    "name": "rankexp-admin",
                    "user": {
                        "client-certificate-data": b64(self._pki.admin_crt),
                        "client-key-data": b64(self._pki.admin_key),
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
