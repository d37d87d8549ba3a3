"""The repository's workflows run with act on a simulated GitHub (``make act``)."""
