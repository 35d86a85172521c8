"""The experiment page in a real browser, after a real run that ends Promoted.

The closed loop of test_loop (operator exporting its evidence to a real Prometheus, the
kube-apiserver, rankers and router as processes, the simulator's traffic) runs v1
against v2 to a promotion. Then ``kubectl rankexp dashboard`` (kubectl finding the
plugin on PATH) serves the page with the test's kubeconfig, and headless Chromium
(Debian's, driven by Playwright) loads the list and the Experiment's page: the chart
draws one point per sample Prometheus holds, the decision is shown, and the browser
reports no page error and no console error.

``RANKEXP_SCREENSHOT=1`` also saves the Experiment's page as docs/dashboard.png (the
README's picture).
"""

from __future__ import annotations

import calendar
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopkit import Loop, manifest, phase

from rankexp.local.probe import http_status
from rankexp.local.process import Process, free_ports, wait_for
from rankexp.local.prom import LocalPrometheus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NAME = "feed-ranking"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


@pytest.fixture
def loop(kube: Any, operator: Any, prometheus: LocalPrometheus, tmp_path: Path) -> Iterator[Loop]:
    harness = Loop(kube, operator, prometheus, tmp_path)
    yield harness
    harness.stop()


@pytest.fixture
def start_page(loop: Loop, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``kubectl rankexp dashboard FLAGS`` (kubectl finds the plugin on PATH) with the
    test's kubeconfig on a free loopback port; its URL. Stopped after the test."""
    started: list[Process] = []
    cluster = loop.kube.cluster
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(cluster.kubeconfig),
        "KUBECACHEDIR": str(tmp_path / "kubectl-cache"),
    }

    def start(*flags: str) -> str:
        (port,) = free_ports(1)
        proc = Process(
            f"dashboard-{port}",
            [cluster.bin_dir / "kubectl", "rankexp", "dashboard", *flags,
             "--prometheus-url", loop.prometheus.url, "--listen", f"127.0.0.1:{port}",
             "--refresh", "0"],
            log_path=tmp_path / f"dashboard-{port}.log", env=env, cwd=REPO,
        )  # fmt: skip
        started.append(proc)
        proc.start()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(url + "/healthz") == 200, timeout=30, what=url,
                 processes=[proc])  # fmt: skip
        return url

    yield start
    for proc in started:
        proc.stop()


def relative_lift_samples(loop: Loop, name: str) -> list[float]:
    ns = loop.kube.namespace
    found = loop.prometheus.query(
        f'rankexp_analysis_relative_lift{{namespace="{ns}",experiment="{name}",'
        f'variant="treatment",metric="ctr"}}[15m]'
    )
    return [float(t) for series in found for t, _ in series["values"]]


def test_page_of_a_promoted_run(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path], start_page: Callable[..., str]
) -> None:
    from playwright.sync_api import ConsoleMessage, Error, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator(export=True)
    loop.kube.apply(manifest(NAME, model_dirs))
    loop.running(NAME, kubelet)
    obj, seen = loop.record_analyses(NAME, lambda o: phase(o) == "Promoted", "Promoted")
    analysed = [t for t, a in seen.items() if a.get("comparisons")]
    # every analysis with a comparison is in Prometheus (scraped every second)
    loop.kube.wait_for(
        lambda: len(relative_lift_samples(loop, NAME)) >= len(analysed),
        "every analysis in Prometheus", timeout=30,
    )  # fmt: skip
    samples = relative_lift_samples(loop, NAME)
    assert len(samples) >= 2, samples
    url = start_page("-n", loop.kube.namespace)

    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    def on_page_error(error: Error) -> None:
        errors.append(f"pageerror: {error}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))

            response = page.goto(url + "/", wait_until="load")
            assert response is not None and response.status == 200
            row = page.locator(
                f'tr.experiment[data-namespace="{loop.kube.namespace}"][data-name="{NAME}"]'
            )
            assert row.count() == 1
            cells = row.locator("td").all_inner_texts()
            assert cells[2:5] == ["Promoted", "control=0 treatment=100", "treatment"], cells
            assert cells[5].startswith("+") and cells[5].endswith("%")
            assert float(cells[6]) < 0.05

            with page.expect_navigation(wait_until="load"):
                row.locator("a").click()
            assert page.url == f"{url}/experiments/{loop.kube.namespace}/{NAME}"
            points = page.locator('svg .ci-point[data-variant="treatment"][data-metric="ctr"]')
            drawn = points.count()
            assert drawn == len(samples) == len(relative_lift_samples(loop, NAME)), (
                drawn, samples,
            )  # fmt: skip
            times = [
                calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))
                for t in points.evaluate_all("els => els.map(e => e.dataset.time)")
            ]
            assert times == sorted(samples)
            last_value = float(points.last.get_attribute("data-value") or "nan")
            ctr = next(c for c in obj["status"]["analysis"]["comparisons"]
                       if (c["variant"], c["metric"]) == ("treatment", "ctr"))  # fmt: skip
            assert last_value == ctr["relativeLift"]
            assert page.locator("svg .ci-point .ci-bar").count() == drawn

            decision = page.locator("#decision").inner_text()
            assert "Promoted" in decision and "treatment" in decision, decision
            assert page.locator("#srm .badge").inner_text() == "OK"
            log = page.locator("table.decision-log").inner_text()
            assert "RunStarted" in log and "Promoted" in log and "control=0 treatment=100" in log
            assert page.locator("table.traffic-history tbody tr").count() == len(
                obj["status"]["trafficHistory"]
            )
            assert page.locator("svg .traffic-step").count() == 2
            assert page.locator("#prometheus-notice").count() == 0
            if os.environ.get("RANKEXP_SCREENSHOT"):
                page.screenshot(path=str(REPO / "docs" / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    # -A: every namespace (a cluster-wide list), the same row
    with urllib.request.urlopen(start_page("-A") + "/", timeout=10) as response:
        listed = response.read().decode()
    assert f'data-namespace="{loop.kube.namespace}" data-name="{NAME}"' in listed
    print(f"\nthe page drew {drawn} analyses of {len(seen)} seen")
