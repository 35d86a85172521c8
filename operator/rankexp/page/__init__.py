"""The experiment page: a read-only web page of every Experiment and its evidence.

Owns, one job a module:

* :mod:`.app`: the server and the command (``python -m rankexp.page`` serves it): reads
  the API server and Prometheus, never writes;
* :mod:`.views` and :mod:`.health`: what each page shows, as data (pure);
* :mod:`.charts`: the geometry of the SVG charts (pure);
* :mod:`.formats`: how values are spelled (pure);
* :mod:`.render`: the Jinja2 templates of ``templates/`` (HTML, the SVG macros, the CSS)
  over the views.

Imports :mod:`rankexp.prom` (the evidence series) and nothing of the operator itself
(``rankexp.experiment``, ``rankexp.runtime``), the commands or the test harness.
"""
