"""What developers and CI run but the model does not: act harness, image e2e, team services."""
