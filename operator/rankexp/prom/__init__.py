"""Reading experiments from Prometheus, and the evidence-over-time series.

Owns: the PromQL of an experiment's window (:mod:`.queries`), its reading into
``rankexp.analysis`` input (:mod:`.metrics`), what can go wrong doing so
(:mod:`.errors`: every error a ``MetricsError``, never a zero), the PromQL of
AlertPolicy's named metrics (:mod:`.alerts`), and the ``rankexp_analysis_*`` series the
operator exports and the page and CLI read back (:mod:`.evidence`). May import ``api``,
``analysis`` and ``ranker.protocol``; nothing above it.
"""
