"""Video decoding, keyframe samplers, moments and the keyframe cache."""
