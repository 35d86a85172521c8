"""The experiment page: a read-only web page of every Experiment and its evidence.

Owns: the server (:mod:`.app`), its Jinja2 templates and the SVG charts. Reads the API
server and Prometheus (``prom``); never writes. ``python -m rankexp.page`` serves it.
"""
