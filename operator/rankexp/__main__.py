"""`python -m rankexp [operator flags] [kopf run flags]`: the operator.

See :mod:`rankexp.runtime.main`.
"""

from rankexp.runtime.main import main

if __name__ == "__main__":
    raise SystemExit(main())
