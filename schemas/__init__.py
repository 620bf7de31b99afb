"""Contracts shared by every layer: event models, topics, Postgres migrations, Delta schemas."""
