"""High availability: three operator replicas, one Lease, one writer at a time.

A kube-apiserver of its own with an audit log: Lease writes at RequestResponse (who holds
it), every other write at Metadata (who wrote: each replica names itself in its
User-Agent). Three `python -m rankexp --leader-elect` processes run against it with short
durations (Lease 4 s, renew deadline 3 s, retry 0.5 s) while the closed loop ramps an
Experiment through 90/10, 75/25, 50/50 to a promotion. The leader is
  * SIGKILLed mid-ramp (a node dies), or
  * SIGSTOPped mid-ramp (a partition: it holds its connections, but says nothing), kept
    stopped until another replica has taken over and acted, then resumed.
Then, from the audit log: every write to the cluster by an operator falls in a Lease term
of the replica that wrote it (exactly one writer identity per term); from the Events: each
action of the run is announced exactly once; from the resumed replica: it wrote nothing
and exited with the lost-leadership status.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from loopkit import Loop, action_events, manifest, phase, seq

from rankexp.local.cluster import LocalCluster
from rankexp.local.prom import LocalPrometheus
from rankexp.runtime.main import LOST_LEADERSHIP

pytestmark = pytest.mark.integration

LEASE, RENEW, RETRY = 4.0, 3.0, 0.5
TICK = 1.0  # RANKEXP_READINESS_INTERVAL of the replicas
REPO = Path(__file__).resolve().parents[3]
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "RequestResponse",
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
            "verbs": ["create", "update", "patch"],
        },
        {"level": "None", "verbs": ["get", "list", "watch"]},
        {"level": "Metadata"},
    ],
}
WRITES = ("create", "update", "patch", "delete", "deletecollection")
UA = re.compile(r"^rankexp-operator/\S+ \((?P<identity>[^)]+)\)")


@pytest.fixture(scope="module")
def audited(audited_cluster: Any) -> tuple[LocalCluster, Path]:
    cluster: tuple[LocalCluster, Path] = audited_cluster(AUDIT_POLICY)
    return cluster


@pytest.fixture(scope="module")
def crds(audited: tuple[LocalCluster, Path]) -> LocalCluster:
    """This module's cluster, with the CRDs (overrides the session's)."""
    cluster = audited[0]
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    for name in ("experiments.rankexp.io", "alertpolicies.rankexp.io"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{name}")
    return cluster


@pytest.fixture(scope="module")
def api_client(audited: tuple[LocalCluster, Path]) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(audited[0].kubeconfig))  # type: ignore[no-untyped-call]
    yield client
    client.close()


class Replicas:
    """Three operator processes for one namespace, each with its own identity."""

    def __init__(self, kube: Any, operators: Any, prometheus: LocalPrometheus) -> None:
        self.kube = kube
        self.procs: dict[str, Any] = {}
        for i in range(3):
            identity = f"op-{i}"
            proc = operators(identity)
            proc.extra_args = [
                "--prometheus-url", prometheus.url, "--leader-elect",
                "--lease-namespace", kube.namespace, "--identity", identity,
                "--lease-duration", str(LEASE), "--renew-deadline", str(RENEW),
                "--retry-period", str(RETRY),
            ]  # fmt: skip
            proc.env = {"RANKEXP_INTERVAL_SCALE": "0.05", "RANKEXP_READINESS_INTERVAL": str(TICK)}
            self.procs[identity] = proc

    def start(self) -> None:
        for proc in self.procs.values():
            proc.start()

    def holder(self) -> str | None:
        lease = self.kube.get("lease", "rankexp-operator") or {}
        holder: str | None = (lease.get("spec") or {}).get("holderIdentity")
        return holder

    def wait_holder(self, other_than: str | None = None, timeout: float = 60) -> str:
        def found() -> str | None:
            holder = self.holder()
            return holder if holder and holder != other_than else None

        name: str = self.kube.wait_for(found, f"a Lease holder other than {other_than}",
                                       timeout=timeout, interval=0.1)  # fmt: skip
        return name


@dataclass
class Write:
    time: datetime
    identity: str
    verb: str
    what: str
    code: int


@dataclass
class Term:
    start: datetime
    holder: str | None


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def audit(log: Path, namespace: str) -> tuple[list[Term], list[Write]]:
    """The Lease terms (a change of holder) and the operators' writes in ``namespace``."""
    terms: list[Term] = []
    writes: list[Write] = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event.get("stage") != "ResponseComplete" or ref.get("namespace") != namespace:
            continue
        code = int((event.get("responseStatus") or {}).get("code", 0))
        if ref.get("resource") == "leases":
            if code < 300 and event.get("requestObject"):
                holder = (event["requestObject"].get("spec") or {}).get("holderIdentity")
                if not terms or terms[-1].holder != holder:
                    terms.append(Term(_ts(event["stageTimestamp"]), holder))
            continue
        match = UA.match(event.get("userAgent") or "")
        if match is None or event.get("verb") not in WRITES:
            continue
        what = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource")
                                          else "")  # fmt: skip
        writes.append(Write(_ts(event["requestReceivedTimestamp"]), match["identity"],
                            event["verb"], f"{what} {ref.get('name', '')}", code))  # fmt: skip
    return terms, writes


def holder_at(terms: list[Term], when: datetime) -> str | None:
    holder = None
    for term in terms:
        if term.start <= when:
            holder = term.holder
    return holder


def assert_one_writer_per_term(log: Path, namespace: str) -> tuple[list[Term], list[Write]]:
    terms, writes = audit(log, namespace)
    assert terms and writes
    strays = [w for w in writes if holder_at(terms, w.time) != w.identity]
    assert not strays, "writes outside the writer's Lease term:\n" + "\n".join(
        f"{w.time.isoformat()} {w.identity} {w.verb} {w.what} -> {w.code} "
        f"(holder then: {holder_at(terms, w.time)})"
        for w in strays[:20]
    )
    for i, term in enumerate(terms):
        end = terms[i + 1].start if i + 1 < len(terms) else None
        writers = {w.identity for w in writes if w.time >= term.start and (end is None
                   or w.time < end)}  # fmt: skip
        assert writers <= {term.holder}, (term, writers)
    return terms, writes


def assert_each_action_once(loop: Loop, name: str) -> None:
    obj = loop.get(name)
    assert phase(obj) == "Promoted"
    history = [[w["weight"] for w in p["weights"]] for p in obj["status"]["trafficHistory"]]
    assert history == [[90, 10], [75, 25], [50, 50], [0, 100]]
    events = action_events(loop.kube, name)
    assert [r for r, _ in events] == ["RunStarted", "TrafficRamped", "TrafficRamped", "Promoted"]
    assert [n.rsplit("-", 1)[1] for _, n in events] == ["1", "2", "3", "4"]
    assert seq(obj) == 4
    for reason in ("RunStarted", "TrafficRamped", "Promoted"):
        for event in loop.kube.events(name, reason):
            assert event.get("count", 1) == 1, event


def ramp_to_first_stage(loop: Loop, replicas: Replicas, api_client: Any, model_dirs: Any) -> str:
    kubelet = loop.start_kubelet(api_client)
    replicas.start()
    leader = replicas.wait_holder()
    steps = {"traffic": {"steps": [10, 25, 50]}, "analysis": {"minSamplesPerVariant": 100}}
    loop.kube.apply(manifest("ha", model_dirs, **steps))
    loop.running("ha", kubelet, rate=60)
    loop.wait("ha", lambda o: seq(o) >= 2, "the first ramp", timeout=180)
    assert replicas.holder() == leader
    return leader


@pytest.fixture
def ha(kube: Any, operators: Any, prometheus: LocalPrometheus, tmp_path: Path) -> Iterator[
        tuple[Loop, Replicas]]:  # fmt: skip
    replicas = Replicas(kube, operators, prometheus)
    # the loop's own operator is never started: the three replicas are the operator
    harness = Loop(kube, operators("unused"), prometheus, tmp_path)
    yield harness, replicas
    harness.stop()  # the replicas are stopped by the operators fixture


def test_sigkill_of_the_leader_mid_ramp_hands_over_within_the_lease(
    ha: tuple[Loop, Replicas],
    api_client: Any,
    model_dirs: dict[str, Path],
    audited: tuple[LocalCluster, Path],
) -> None:
    loop, replicas = ha
    old = ramp_to_first_stage(loop, replicas, api_client, model_dirs)
    killed = datetime.now().astimezone()
    replicas.procs[old].kill()
    new = replicas.wait_holder(other_than=old, timeout=4 * LEASE)
    loop.wait("ha", lambda o: phase(o) == "Promoted", "Promoted after the takeover", timeout=240)
    assert_each_action_once(loop, "ha")

    terms, writes = assert_one_writer_per_term(audited[1], loop.kube.namespace)
    taken = next(t.start for t in terms if t.holder == new and t.start > killed)
    first_write = min(w.time for w in writes if w.identity == new)
    takeover = (taken - killed).total_seconds()
    writing = (first_write - killed).total_seconds()
    print(f"\nSIGKILL: Lease taken {takeover:.2f} s after the kill, first write by the new "
          f"leader {writing:.2f} s after (Lease {LEASE:g} s, retry {RETRY:g} s, tick {TICK:g} s)"
          )  # fmt: skip
    # safety: nobody takes a Lease before it expired; liveness: the next candidate's
    # attempt after expiry (retry period, jittered by up to 120 %) takes it
    assert LEASE - RETRY <= takeover <= LEASE + 2.2 * RETRY + 1.0
    assert writing <= LEASE + 2.2 * RETRY + TICK + 5.0  # + kopf's start-up
    assert {w.identity for w in writes} == {old, new}


def test_a_partitioned_leader_resumed_later_writes_nothing_and_exits(
    ha: tuple[Loop, Replicas],
    api_client: Any,
    model_dirs: dict[str, Path],
    audited: tuple[LocalCluster, Path],
) -> None:
    loop, replicas = ha
    old = ramp_to_first_stage(loop, replicas, api_client, model_dirs)
    stopped_proc = replicas.procs[old]
    assert stopped_proc.proc is not None
    stopped_proc.proc.send_signal(signal.SIGSTOP)
    stopped = datetime.now().astimezone()
    before = seq(loop.get("ha"))
    new = replicas.wait_holder(other_than=old, timeout=4 * LEASE)
    # the new leader acts before the old one wakes up
    loop.wait("ha", lambda o: seq(o) > before, "an action by the new leader", timeout=180)
    resumed = datetime.now().astimezone()
    stopped_proc.proc.send_signal(signal.SIGCONT)
    code = stopped_proc.proc.wait(timeout=30)
    assert code == LOST_LEADERSHIP
    assert "leadership lost" in stopped_proc.log_path.read_text(errors="replace")

    loop.wait("ha", lambda o: phase(o) == "Promoted", "Promoted", timeout=240)
    assert_each_action_once(loop, "ha")
    terms, writes = assert_one_writer_per_term(audited[1], loop.kube.namespace)
    late = [w for w in writes if w.identity == old and w.time >= stopped]
    assert not late, late
    assert [t.holder for t in terms if t.start >= stopped][:1] == [new]
    counts = {i: sum(w.identity == i for w in writes) for i in sorted({w.identity for w in writes})}
    print(f"\nSIGSTOP {(resumed - stopped).total_seconds():.1f} s: the old leader wrote "
          f"nothing after the stop and exited {code} on SIGCONT; writes by identity: {counts}"
          )  # fmt: skip
