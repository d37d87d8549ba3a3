"""The stages that ``dvc.yaml`` runs, one module each (data bootstrap, validate to register)."""
