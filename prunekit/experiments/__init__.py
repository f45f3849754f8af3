"""Reproducible experiments behind the book's chapters (``python -m prunekit.experiments.when``)."""
