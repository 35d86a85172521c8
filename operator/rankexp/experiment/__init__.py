"""The Experiment: its children, its runs and ramps, its analysis loop, its status.

Owns: the desired children (:mod:`.resources`), the traffic state machine
(:mod:`.rollout`), one reconcile (:mod:`.reconcile`), one analysis tick (:mod:`.loop`)
and the decision record as status evidence (:mod:`.evidence`). Plain functions on a
small ``ChildStore`` protocol; kopf is not imported here (:mod:`rankexp.runtime`
registers them). May import ``api``, ``prom``, ``analysis`` and ``ranker.route``; never
``alerting``, ``runtime``, ``cli``, ``page`` or ``local``.
"""
