"""Shared kernel: settings, the SQL store, shared types and errors."""
