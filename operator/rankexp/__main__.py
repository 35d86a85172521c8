"""`python -m rankexp [kopf run flags]`: run the operator.

Every flag of ``kopf run`` passes through (--standalone, -A/--all-namespaces,
-n/--namespace, --liveness, --verbose, ...); the handlers module is preloaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from kopf import cli

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        args = args[1:]
    try:
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
