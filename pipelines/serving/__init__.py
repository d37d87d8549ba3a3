"""Serving: the BentoML service, its request model, scoring, HTTP guard and model store."""
