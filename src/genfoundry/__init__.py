"""genfoundry: a company's own generative-AI stack in one package."""

__version__ = "0.1.0"

__all__ = ["__version__"]
