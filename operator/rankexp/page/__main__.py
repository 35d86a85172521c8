"""`python -m rankexp.page ARGS` is `rankexp dashboard ARGS`.

The chart's page Deployment runs it.
"""

from rankexp.page.app import main

if __name__ == "__main__":
    raise SystemExit(main())
