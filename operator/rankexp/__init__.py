"""rankexp: the control plane (Kopf operator) of online A/B experiments for ranking models."""
