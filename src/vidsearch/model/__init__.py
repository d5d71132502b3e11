"""CLIP backbone, AIM adapters, temporal heads and the video-text model."""
