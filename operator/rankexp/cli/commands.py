"""The ``rankexp`` command line: one subcommand per job.

``rankexp analyze FILE.json`` (``-`` for stdin) prints the decision record.
``rankexp status NAME [-n NS]`` prints an Experiment's phase, traffic and evidence.
``rankexp promote NAME VARIANT [-n NS]`` approves a promotion: it sets
``spec.promotion.approvedVariant`` (a field people write; the operator never does).
``rankexp dashboard [-n NS | -A]`` serves the read-only experiment page (rankexp.page.app).
The same commands ship as a kubectl plugin: ``kubectl rankexp status NAME``.

Exit codes: 0 success, 1 the cluster said no (not found, rejected), 2 bad usage or bad
input (the message names the field). Add a subcommand by writing a
``_cmd_<name>(args) -> int`` and registering it in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _read_json(path: str) -> Any:
    if path == "-":
        text = sys.stdin.read()
        source = "<stdin>"
    else:
        source = path
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ValueError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def _cmd_analyze(args: argparse.Namespace) -> int:
    # Imported here so other subcommands do not pay for scipy at start-up.
    from rankexp.analysis import InputError, analyze

    try:
        payload = _read_json(args.file)
        record = analyze(payload)
    except (InputError, ValueError) as exc:
        sys.stderr.write(f"rankexp analyze: {exc}\n")
        return EXIT_BAD_INPUT
    indent = None if args.compact else 2
    sys.stdout.write(json.dumps(record, indent=indent, allow_nan=False) + "\n")
    return EXIT_OK


def _kube(args: argparse.Namespace) -> tuple[Any, str]:
    """(CustomObjectsApi, namespace): the kubeconfig's current context, as kubectl."""
    from kubernetes import client, config

    kubeconfig = args.kubeconfig
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=args.context)  # type: ignore[no-untyped-call]
        namespace = args.namespace
        if namespace is None:
            _, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            namespace = (current or {}).get("context", {}).get("namespace") or "default"
    except (config.ConfigException, OSError, TypeError) as exc:
        raise ValueError(f"no usable kubeconfig: {exc}") from None
    return client.CustomObjectsApi(api_client), namespace


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def _get_experiment(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]]:
    from rankexp.api import GROUP, VERSION

    api, namespace = _kube(args)
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "experiments", args.name)
    return api, namespace, obj


class _Refused(Exception):
    """A check failed before anything was written: exit 2 with this message."""


def _against_cluster(
    args: argparse.Namespace, work: Callable[[Any, str, dict[str, Any]], str]
) -> int:
    """Read the Experiment, run ``work(api, namespace, obj)``, print what it returns;
    every failure is one line on stderr and an exit code."""
    from kubernetes.client.exceptions import ApiException

    try:
        api, namespace, obj = _get_experiment(args)
        sys.stdout.write(work(api, namespace, obj))
    except (ValueError, _Refused) as exc:
        sys.stderr.write(f"{args.prog}: {exc}\n")
        return EXIT_BAD_INPUT
    except ApiException as exc:
        sys.stderr.write(f"{args.prog}: {_api_message(exc)}\n")
        return EXIT_FAILED
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from rankexp.cli.status import render

    def show(_api: Any, namespace: str, obj: dict[str, Any]) -> str:
        if args.history:
            return _history(args, namespace, obj)
        if args.output == "json":
            return json.dumps(obj.get("status") or {}, indent=2) + "\n"
        return render(obj)

    return _against_cluster(args, show)


def _history(args: argparse.Namespace, namespace: str, obj: dict[str, Any]) -> str:
    """``status --history``: every analysis since the run started, from Prometheus."""
    from datetime import UTC, datetime

    from rankexp.prom import evidence as ev

    started = (obj.get("status") or {}).get("startedAt")
    if not started:
        return "No analysis yet (the run has not started).\n"
    seconds = datetime.now(UTC).timestamp() - ev.parse_time(str(started)) + 60
    try:
        points = ev.fetch_history(args.prometheus_url, namespace, args.name, seconds)
    except ev.HistoryUnavailable as exc:
        raise _Refused(str(exc)) from None
    if args.output == "json":
        return json.dumps([_point_json(p) for p in points], indent=2) + "\n"
    if not points:
        return (
            f"No analysis series in Prometheus at {args.prometheus_url} (does it scrape the "
            "operator's /metrics?).\n"
        )
    from rankexp.cli.status import render_history

    return render_history(points, args.metric)


def _point_json(point: Any) -> dict[str, Any]:
    return {
        "time": point.time,
        "decision": point.decision,
        "srmPValue": point.srm_p_value,
        "exposures": dict(point.exposures),
        "comparisons": [
            {"variant": v, "metric": m, **figures} for (v, m), figures in point.comparisons.items()
        ],
    }


def _cmd_promote(args: argparse.Namespace) -> int:
    from rankexp.api import GROUP, VERSION

    def approve(api: Any, namespace: str, obj: dict[str, Any]) -> str:
        names = [v.get("name") for v in (obj.get("spec") or {}).get("variants") or []]
        if args.variant not in names:
            raise _Refused(
                f"variant: {args.variant!r} is not a variant of {args.name} "
                f"({', '.join(map(str, names))})"
            )
        patch = {"spec": {"promotion": {"approvedVariant": args.variant}}}
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "experiments", args.name, patch
        )
        phase = (obj.get("status") or {}).get("phase")
        return (
            f"experiment {namespace}/{args.name}: promotion of {args.variant} approved "
            f"(spec.promotion.approvedVariant); the operator acts at its next tick "
            f"(phase now {phase})\n"
        )

    return _against_cluster(args, approve)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from rankexp.page import app as dashboard

    return dashboard.run(args)


def _cmd_render_rules(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from rankexp.alerting.promrule import render

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
        out = [render(d) for d in docs if d.get("kind") == "AlertPolicy"]
    except OSError as exc:
        sys.stderr.write(f"{args.prog} render-rules: {args.file}: {exc.strerror or exc}\n")
        return EXIT_BAD_INPUT
    except (yaml.YAMLError, ValidationError, AttributeError) as exc:
        sys.stderr.write(f"{args.prog} render-rules: {args.file}: {exc}\n")
        return EXIT_BAD_INPUT
    if not out:
        sys.stderr.write(f"{args.prog} render-rules: {args.file}: no AlertPolicy in it\n")
        return EXIT_BAD_INPUT
    sys.stdout.write("---\n".join(out))
    return EXIT_OK


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default=None, help="default: the context's namespace")
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument("--context", default=None, help="kubeconfig context")


def _prometheus_flag(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument(
        "--prometheus-url",
        default=os.environ.get("RANKEXP_PROMETHEUS_URL", "http://127.0.0.1:9090"),
        help="Prometheus that scrapes the operator (default: $RANKEXP_PROMETHEUS_URL or "
        "http://127.0.0.1:9090, e.g. after kubectl port-forward)",
    )


def build_parser(prog: str = "rankexp") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Online A/B experiments for feed-ranking models."
    )
    parser.set_defaults(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = sub.add_parser(
        "status",
        help="print an Experiment's phase, traffic and evidence",
        description="Phase, traffic per variant, conditions and the latest analysis "
        "(comparisons, sample-ratio check, guardrails, drift, required samples).",
    )
    status.add_argument("name", help="the Experiment")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.add_argument(
        "--history",
        action="store_true",
        help="every analysis since the start (lift, CI, p, SRM p, exposures) from the "
        "rankexp_analysis_* series in Prometheus",
    )
    status.add_argument(
        "--metric", default=None, help="with --history: only this metric (e.g. ctr)"
    )
    _prometheus_flag(status)
    _cluster_flags(status)
    status.set_defaults(func=_cmd_status)

    promote = sub.add_parser(
        "promote",
        help="approve the promotion of a variant (sets spec.promotion.approvedVariant)",
        description="Approve a promotion: the operator promotes VARIANT at its next tick "
        "(100 %% of users, the other variants scaled to 0).",
    )
    promote.add_argument("name", help="the Experiment")
    promote.add_argument("variant", help="the variant to promote")
    _cluster_flags(promote)
    promote.set_defaults(func=_cmd_promote)

    from rankexp.page import app as page_app

    page = sub.add_parser(
        "dashboard",
        help="serve the experiment page (read-only) on 127.0.0.1:8765",
        description=page_app.DESCRIPTION,
    )
    page_app.add_arguments(page)
    page.set_defaults(func=_cmd_dashboard)

    rules = sub.add_parser(
        "render-rules",
        help="render an AlertPolicy as a prometheus-operator PrometheusRule (YAML)",
        description="For Alertmanager users: the policy's rules as a PrometheusRule.",
    )
    rules.add_argument("file", metavar="FILE.yaml", help="AlertPolicy manifest, or - for stdin")
    rules.set_defaults(func=_cmd_render_rules)

    analyze = sub.add_parser(
        "analyze",
        help="test an experiment's counters and print a decision record (JSON)",
        description="Read an analysis input (JSON) and print the decision record. "
        "Exits 2 on bad input, naming the field.",
    )
    analyze.add_argument("file", metavar="FILE.json", help="input file, or - for stdin")
    analyze.add_argument("--compact", action="store_true", help="print on one line")
    analyze.set_defaults(func=_cmd_analyze)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "rankexp") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)  # exits 2 itself on bad usage
    code: int = args.func(args)
    return code


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl rankexp ...``: kubectl finds the ``kubectl-rankexp`` executable on PATH."""
    return main(argv, prog="kubectl rankexp")


if __name__ == "__main__":
    raise SystemExit(main())
