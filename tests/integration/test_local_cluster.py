"""The local control plane: real etcd + kube-apiserver + kubectl on 127.0.0.1."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rankexp.local import binaries
from rankexp.local.binaries import (
    BinariesMissingError,
    ensure_binaries,
    envtest_version,
    find_binaries,
)
from rankexp.local.cluster import ClusterStartError, KubectlError, LocalCluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ helpers (/proc)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(ppid: int) -> dict[int, str]:
    """Direct children of ``ppid``: pid -> command name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            found[int(entry.name)] = comm
    return found


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(hex local address, port) of every listening TCP socket that ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                address, port = local.split(":")
                found.add((address, int(port, 16)))
    return found


def _read_line(stream: int, timeout: float) -> str:
    """One line from a raw pipe fd, failing after ``timeout`` seconds."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"no complete line after {timeout} s: {data!r}")
            chunk = os.read(stream, 4096)
            if not chunk:
                raise EOFError(f"stream closed before a line: {data!r}")
            data += chunk
    finally:
        selector.close()
    return data.split(b"\n", 1)[0].decode()


# --------------------------------------------------------------------------- tests


def test_cluster_is_up(kube_cluster: LocalCluster) -> None:
    assert kube_cluster.server.startswith("https://127.0.0.1:")
    assert kube_cluster.kubeconfig.is_file()
    assert kube_cluster.kubeconfig.parent == kube_cluster.workdir
    assert kube_cluster.bin_dir == find_binaries()
    assert [p.name for p in kube_cluster.processes] == ["etcd", "kube-apiserver"]
    assert all(p.is_running() for p in kube_cluster.processes)
    kube_cluster.check()


def test_kubectl_version_reports_the_built_release(kube_cluster: LocalCluster) -> None:
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == envtest_version()
    assert version["clientVersion"]["gitVersion"] == envtest_version()


def test_kubectl_get_namespaces(kube_cluster: LocalCluster) -> None:
    out = kube_cluster.kubectl("get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system"} <= set(out)


def test_create_namespace_and_apply_from_stdin(kube_cluster: LocalCluster) -> None:
    ns = f"lc-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", ns)
    manifest = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: routing, namespace: {ns}}}
data: {{weights: "control=50,treatment=50"}}
"""
    kube_cluster.kubectl("apply", "-f", "-", input=manifest)
    cm = kube_cluster.kubectl_json("get", "configmap", "routing", "-n", ns)
    assert cm["data"] == {"weights": "control=50,treatment=50"}
    phase = kube_cluster.kubectl_json("get", "namespace", ns)["status"]["phase"]
    assert phase == "Active"


def test_kubectl_errors_carry_stderr(kube_cluster: LocalCluster) -> None:
    with pytest.raises(KubectlError, match="NotFound|not found") as info:
        kube_cluster.kubectl("get", "namespace", "no-such-namespace")
    assert info.value.returncode != 0
    result = kube_cluster.kubectl("get", "namespace", "no-such-namespace", check=False)
    assert result.returncode != 0
    assert "not found" in result.stderr


def test_python_client_uses_the_kubeconfig(kube_cluster: LocalCluster) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    try:
        names = {ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items}
    finally:
        api.close()
    assert "default" in names


def test_servers_listen_on_loopback_only(kube_cluster: LocalCluster) -> None:
    api_port = int(kube_cluster.server.rsplit(":", 1)[1])
    etcd_port = int(kube_cluster.etcd_url.rsplit(":", 1)[1])
    seen: set[tuple[str, int]] = set()
    for proc in kube_cluster.processes:
        assert proc.pid is not None
        addresses = _listening_addresses(proc.pid)
        assert addresses, f"{proc.name} listens nowhere?"
        # 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex
        assert {a for a, _ in addresses} == {"0100007F"}, (proc.name, addresses)
        seen |= addresses
    assert {("0100007F", api_port), ("0100007F", etcd_port)} <= seen


def test_find_binaries_missing_says_make_envtest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(BinariesMissingError, match="make envtest"):
        find_binaries()
    monkeypatch.setenv(binaries.BIN_DIR_ENV, str(tmp_path))
    with pytest.raises(BinariesMissingError, match="make envtest"):
        find_binaries()


def test_version_constant_matches_the_build_recipe() -> None:
    assert (REPO / "tools" / "envtest" / "go.mod").is_file()
    assert envtest_version() == binaries.K8S_VERSION


def test_failed_start_cleans_up() -> None:
    cluster = LocalCluster(ensure_binaries(), extra_apiserver_args=["--no-such-flag"])
    with pytest.raises(ClusterStartError, match="kube-apiserver exited"):
        cluster.start()
    assert not cluster.workdir.exists()
    assert cluster.processes == []


def test_exception_in_body_stops_everything() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with LocalCluster(ensure_binaries()) as cluster:
            pids = [p.pid for p in cluster.processes]
            workdir = cluster.workdir
            raise RuntimeError("boom")
    assert pids and not any(_alive(pid) for pid in pids if pid is not None)
    assert not workdir.exists()


def test_up_command_prints_export_first_serves_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    ensure_binaries()
    stderr_path = tmp_path / "up.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rankexp.local.cluster", "up"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    children: dict[int, str] = {}
    try:
        assert proc.stdout is not None
        try:
            first = _read_line(proc.stdout.fileno(), timeout=120)
        except (TimeoutError, EOFError) as exc:
            pytest.fail(f"{exc}; stderr:\n{stderr_path.read_text()}")
        assert first.startswith("export KUBECONFIG="), first
        kubeconfig = Path(first.removeprefix("export KUBECONFIG="))
        assert kubeconfig.is_file()

        children = _children(proc.pid)
        assert sorted(children.values()) == ["etcd", "kube-apiserver"]

        kubectl = find_binaries() / "kubectl"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        out = subprocess.run(
            [str(kubectl), "get", "ns", "default", "-o", "name"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.strip() == "namespace/default"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, stderr_path.read_text()
        assert not any(_alive(pid) for pid in children), children
        assert not kubeconfig.parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL cannot clean up; its servers must still stop."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from rankexp.local.cluster import Process\n"
        f"p = Process('sleeper', ['sleep', '300'], log_path=Path({str(tmp_path)!r}) / 's.log')\n"
        "p.start()\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # running
        parent.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":  # dead, waiting for init to reap it
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("child outlived its SIGKILLed parent")
