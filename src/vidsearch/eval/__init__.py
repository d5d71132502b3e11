"""Retrieval metrics, evaluation and post-processing."""
