"""The gateway: OpenAI-compatible routes, auth, quotas, metrics."""
