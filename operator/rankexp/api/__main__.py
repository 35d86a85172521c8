"""`python -m rankexp.api render crds|reference` (``make crds``).

The CRD YAML, and the CRD reference pages of the docs.
"""

from rankexp.api.crd import main

if __name__ == "__main__":
    raise SystemExit(main())
