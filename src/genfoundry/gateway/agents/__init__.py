"""Agents through the gateway: ``agent:NAME`` as a chat model, their runs, approvals, and /v1/extract."""
