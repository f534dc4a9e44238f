"""Guardrails: PII vault, injection and jailbreak detection, policies, routing, groundedness."""
