"""Orchestration: grounded answers with citations, summaries."""
