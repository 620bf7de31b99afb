"""lambdarec: a self-hostable, real-time recommendation pipeline (CLI and settings only)."""

__version__ = "0.1.0"
