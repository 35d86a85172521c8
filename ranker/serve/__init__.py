"""The ranker service: ``ranker serve``, a FastAPI app around one model.

Owns: the app factory (:mod:`.app`: /health, /ready, /rank, /feedback, /metrics), its
Prometheus series (:mod:`.metrics`), feed-quality monitoring (:mod:`.quality`), the
/rank answer as JSON (:mod:`.feed_json`) and fault injection (:mod:`.faults`).
May import ``model``, ``world`` and ``protocol``; never ``route``.
"""
