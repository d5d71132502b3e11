"""vidsearch: text-to-video search with CLIP, keyframe caching, a safe feature store and AIM adapters."""

__version__ = "0.1.0"
