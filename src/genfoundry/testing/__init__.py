"""Test kit: fake providers and conformance mixins for every protocol."""

from genfoundry.testing.fakes import FakeChatModel, FakeEmbeddingModel

__all__ = ["FakeChatModel", "FakeEmbeddingModel"]
