"""Monitoring: reference profile, drift maths, Prometheus rules, dashboard, `make monitor`."""
