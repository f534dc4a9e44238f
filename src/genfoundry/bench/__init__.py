"""Benchmarks: each measures genfoundry beside its peer in the same run and returns JSON.

This package imports the layers; no layer imports it.
"""
