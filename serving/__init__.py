"""Serving layer: the FastAPI recommendation API."""
