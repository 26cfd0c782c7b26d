"""The REST API under ``/api/v1`` (DRF): one module per group of endpoints, the URL map, and
the answer to errors (exceptions.py)."""
