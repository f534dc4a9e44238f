"""/v1/datasets and /v1/labeling: datasets, labeling tasks and their review queue."""
