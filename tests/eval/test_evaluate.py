import numpy as np
import torch

from vidsearch.config import ModelConfig
from vidsearch.data.loader import LoaderVideo, frame_positions
from vidsearch.eval.evaluate import evaluate_model, similarity, tokenize_captions
from vidsearch.eval.postprocess import evaluate_similarity
from vidsearch.model.backbone import Backbone, build_clip

MICRO = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _model():
    from vidsearch.model.videoclip import VideoTextModel

    torch.manual_seed(0)
    return VideoTextModel(Backbone(build_clip(MICRO), MICRO, False, None, None), ModelConfig("micro", num_frames=4)).eval()


class _Store:
    size = 32

    def __init__(self):
        self.frames = np.random.default_rng(0).integers(0, 256, size=(3, 6, 32, 32, 3), dtype=np.uint8)

    def read(self, video, positions):
        return self.frames[int(video.cache_id)][np.asarray(video.frames)[positions]]


VIDEOS = [LoaderVideo("a", "0", tuple(range(6)), ("a red ball", "a red circle")),
          LoaderVideo("b", "1", (0, 1), ("a blue box",)),
          LoaderVideo("c", "2", tuple(range(5)), ("a green star moves up", "a star", "x"))]


def test_max_words_cuts_captions_and_ends_them_with_the_end_token():
    model = _model()
    tokens = tokenize_captions(model, ["a b c d e f g", "a"], max_words=4)
    full = model.tokenize(["a b c d e f g", "a"])
    assert tokens.shape == (2, 4)
    assert tokens[0].tolist() == full[0, :3].tolist() + [int(full.max())]
    assert tokens[1].tolist() == full[1, :4].tolist()


def test_evaluation_scores_every_caption_against_evenly_spaced_padded_videos():
    model, store = _model(), _Store()
    sim, caption_video = similarity(model, VIDEOS, store, device=torch.device("cpu"))
    assert sim.shape == (6, 3) and caption_video.tolist() == [0, 0, 1, 2, 2, 2]
    with torch.no_grad():
        text = model.encode_texts([c for v in VIDEOS for c in v.captions])
        positions, mask = frame_positions(2, 4, rng=None)
        frames = model.preprocess_frames(torch.from_numpy(store.frames[1][positions]))[None]
        video_b = model.encode_video(frames, torch.from_numpy(mask)[None])
    np.testing.assert_allclose(sim[:, 1], (text @ video_b.t())[:, 0].numpy(), atol=1e-6)
    evaluation = evaluate_model(model, VIDEOS, store, split="test", device=torch.device("cpu"))
    expected = evaluate_similarity(sim, caption_video)
    assert evaluation.results["raw"]["text_to_video"] == expected["raw"]["text_to_video"]
    assert evaluation.results["dsl"]["video_to_text"] == expected["dsl"]["video_to_text"]
    assert (evaluation.videos, evaluation.captions) == (3, 6)
    table = evaluation.table(label="m", dsl=True)
    assert "| m | R@1↑ | R@5↑ | R@10↑ | MdR↓ | MnR↓ |" in table and "m (DSL)" in table and "video→text" in table
