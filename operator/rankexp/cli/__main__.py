"""`python -m rankexp.cli ARGS` is `rankexp ARGS`."""

from rankexp.cli.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
