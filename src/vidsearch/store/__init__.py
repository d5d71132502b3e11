"""The feature store, indexes and search."""
