"""Vector store backends behind the VectorStore protocol."""
