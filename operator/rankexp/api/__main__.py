"""`python -m rankexp.api render crds` (``make crds``)."""

from rankexp.api.crd import main

if __name__ == "__main__":
    raise SystemExit(main())
