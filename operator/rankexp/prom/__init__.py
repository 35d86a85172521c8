"""Reading experiments from Prometheus, and the evidence-over-time series.

Owns: the PromQL of every metric and its reading into ``rankexp.analysis`` input
(:mod:`.metrics`), and the ``rankexp_analysis_*`` series the operator exports and the
page and CLI read back (:mod:`.evidence`). May import ``api``, ``analysis`` and
``ranker.protocol``; nothing above it.
"""
