"""The library every part of the model stands on: features, model files, metrics, lineage."""
