"""Merge to deploy: lock check, bento, image, push, SBOM, manifests, and the one-machine e2e."""
