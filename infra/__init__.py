"""Starts and stops the real services lambdarec runs on (no Docker): Kafka, Postgres+pgvector,
Redis, MinIO and the Spark jars. Used by the CLI and the tests; runtime code reaches services only
through :mod:`lambdarec.settings`."""
