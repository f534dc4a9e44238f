"""Observability: every call recorded, usage and cost."""
