"""The ``rankexp`` command line: one subcommand per job.

``rankexp analyze FILE.json`` (``-`` for stdin) prints the decision record.
Exit codes: 0 success, 2 bad usage or bad input (the message names the field).
Add a subcommand by writing a ``_cmd_<name>(args) -> int`` and registering it
in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankexp", description="Online A/B experiments for feed-ranking models."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 itself on bad usage
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
