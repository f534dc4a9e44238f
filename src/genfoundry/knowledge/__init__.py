"""Knowledge: loaders, chunking, vector stores, hybrid retrieval, ingestion and forgetting."""

from pathlib import Path

__all__ = ["SAMPLE_DOCS", "SAMPLE_QUESTIONS"]

_SAMPLE = Path(__file__).parent / "sample"
SAMPLE_DOCS = _SAMPLE / "docs"  # the fictional Brightwater Outfitters help centre, ingested by `up`
SAMPLE_QUESTIONS = _SAMPLE / "questions.jsonl"  # questions with expected answers, for evaluation
