"""`python -m rankexp [--prometheus-url URL] [--interval-scale X] [kopf run flags]`.

The operator's own flags come first and are also read from the environment
(``RANKEXP_PROMETHEUS_URL``, ``RANKEXP_INTERVAL_SCALE``); every other flag passes through
to ``kopf run`` (--standalone, -A/--all-namespaces, -n/--namespace, --liveness,
--verbose, ...); the handlers module is preloaded.

``--interval-scale`` multiplies every ``spec.analysis.interval`` (0.05 turns 1m into 3s):
for tests and demos, never for real experiments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rankexp.handlers import INTERVAL_SCALE_ENV, PROMETHEUS_URL_ENV


def _own_flags(args: list[str]) -> list[str]:
    """Consume the operator's flags into the environment; return kopf's."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--prometheus-url", default=None)
    parser.add_argument("--interval-scale", type=float, default=None)
    known, rest = parser.parse_known_args(args)
    if known.prometheus_url is not None:
        os.environ[PROMETHEUS_URL_ENV] = known.prometheus_url
    if known.interval_scale is not None:
        if not known.interval_scale > 0:
            parser.error("--interval-scale must be a positive number")
        os.environ[INTERVAL_SCALE_ENV] = repr(known.interval_scale)
    return rest


def main(argv: Sequence[str] | None = None) -> int:
    from kopf import cli

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        args = args[1:]
    if "--help" in args or "-h" in args:
        sys.stdout.write(
            "python -m rankexp [--prometheus-url URL] [--interval-scale X] [kopf run flags]\n"
            "  --prometheus-url URL  Prometheus the analysis reads ($RANKEXP_PROMETHEUS_URL)\n"
            "  --interval-scale X    multiply every analysis interval (tests and demos only;\n"
            "                        $RANKEXP_INTERVAL_SCALE)\n\n"
        )
    try:
        args = _own_flags(args)
        cli.main.main(
            args=["run", "--module", "rankexp.handlers", *args],
            prog_name="python -m rankexp",
            standalone_mode=True,
        )
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
