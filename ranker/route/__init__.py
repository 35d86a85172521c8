"""The router: ``ranker route``, an experiment's entry point.

Owns: the sticky allocation of users to variants by weight (:mod:`.allocation`), the
router app (:mod:`.router`, :mod:`.openapi`), its upstream client (:mod:`.upstream`),
team-draft interleaving (:mod:`.interleave`) and click attribution with signed tokens
(:mod:`.attribution`). May import ``protocol``; never ``serve`` or ``model``.
"""
