"""The model's pipeline: one module per DVC stage, plus the schema and params they share."""
