"""Manifests (the one schema), dataset converters, the synthetic library and the training loader."""
