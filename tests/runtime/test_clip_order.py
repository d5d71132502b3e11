"""A query clip keeps its time order from the file to the vector: a clip and the same clip played backwards decode to
mirrored keyframes and, through a video tower that models time, give different vectors, in both runtimes."""

import numpy as np
import pytest

from vidsearch.config import FrameConfig
from vidsearch.data.synthetic import random_spec, render_clip
from vidsearch.demo import SHIPPED_CHECKPOINT, SHIPPED_EXPORTED
from vidsearch.model.source import ModelSource
from vidsearch.store.indexer import _patch_size, encode_clip, encode_clips, image_views
from vidsearch.video.clips import decode_clip
from vidsearch.video.encode import write_video

CONFIG = FrameConfig(frames=5, size=48)  # 17 frames at 4 fps: keyframes at 0, 1, 2, 3 and 4 s, mirrored when reversed


def cosine(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def forward_and_backward(tmp_path_factory):
    frames = render_clip(random_spec(np.random.default_rng(3)), frames=17, size=64)
    root = tmp_path_factory.mktemp("clips")
    forward = decode_clip(write_video(root / "forward.mp4", frames, fps=4), CONFIG)
    backward = decode_clip(write_video(root / "backward.mp4", frames[::-1], fps=4), CONFIG)
    return forward, backward


def test_a_reversed_clip_decodes_to_the_mirrored_keyframes(forward_and_backward):
    forward, backward = forward_and_backward
    assert forward.timestamps == backward.timestamps == [0.0, 1.0, 2.0, 3.0, 4.0]
    difference = np.abs(forward.frames[::-1].astype(int) - backward.frames.astype(int)).mean()
    unrelated = np.abs(forward.frames.astype(int) - backward.frames.astype(int)).mean()
    assert difference < 2 and unrelated > 4 * difference, (difference, unrelated)


def test_the_demo_models_tell_a_clip_from_its_reverse_in_both_runtimes(forward_and_backward):
    """The shipped model (AIM adapters with a temporal embedding; 8 frames): the two directions are further apart than
    compression moves a clip (measured 1 − cos = 0.008 between them, 0.0002 between the reversed file and the forward
    keyframes reversed here, compression only), in both runtimes."""
    forward, backward = forward_and_backward
    torch_model = ModelSource(checkpoint=str(SHIPPED_CHECKPOINT)).load().eval()
    exported = ModelSource(exported=str(SHIPPED_EXPORTED)).load()
    for model in (torch_model, exported):
        ahead, behind = encode_clip(model, forward.frames), encode_clip(model, backward.frames)
        mirrored = encode_clip(model, forward.frames[::-1])
        apart, noise = 1 - cosine(ahead, behind), 1 - cosine(mirrored, behind)
        assert apart > 10 * noise and noise < 1e-3, (type(model).__name__, apart, noise)
    np.testing.assert_allclose(encode_clip(exported, backward.frames), encode_clip(torch_model, backward.frames),
                               atol=1e-5)


def test_a_seqtransf_tower_sees_the_order_a_mean_pooling_one_does_not(micro):
    """Pixels straight in (no compression): the micro AIM + seqTransf model's vector moves with the order of the same
    frames; the tiny plain meanP model's (no adapters, no temporal embedding) stays put to float rounding."""
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    plain = ModelSource(backbone="vidsearch-tiny", num_frames=4).load().eval()
    assert (micro.config.head, plain.config.head, plain.config.adapters) == ("seqTransf", "meanP", None)
    moved = np.abs(encode_clip(micro, frames) - encode_clip(micro, frames[::-1])).max()
    still = np.abs(encode_clip(plain, frames) - encode_clip(plain, frames[::-1])).max()
    assert moved > 1e-3 and still < 1e-6, (moved, still)


def test_short_clips_are_padded_as_library_rows_are(micro):
    """Fewer keyframes than the model's T: all of them, the last repeated, masked as padding (`frame_positions`)."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    padded = np.concatenate([frames, frames[-1:], frames[-1:]])
    views = np.stack([image_views(frame, size=32, patch=_patch_size(micro)) for frame in padded], axis=1)
    mean = encode_clips(micro, views, np.repeat(np.array([[True, True, False, False]]), 9, axis=0)).mean(axis=0)
    np.testing.assert_allclose(encode_clip(micro, frames), mean / np.linalg.norm(mean), atol=1e-6)
