"""Data: datasets, labeling, synthetic data."""
