"""The search-by-example term (`--example-weight`): its formula, where its gradient goes, what it teaches."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidsearch.cli import main
from vidsearch.train.loop import one_frame_each
from vidsearch.train.loss import EXAMPLE_SCALE, caption_similarity, example_loss


def _features(seed: int, n: int = 6, dim: int = 8) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _reference(text, video, frame, footage, scale: float, motion: float = 1.0) -> float:
    """The module docstring's formula, written out again in numpy, one row at a time."""
    def softmax(row):
        e = np.exp(row - row.max())
        return e / e.sum()

    def shown(i):  # the mean caption of video i's footage, renormalised
        mean = text[footage == footage[i]].mean(axis=0)
        return mean / np.linalg.norm(mean)

    terms = []
    for i in range(len(text)):
        others = [j for j in range(len(text)) if footage[j] != footage[i]]
        alike = np.array([motion * text[i] @ text[j] + (1 - motion) * shown(i) @ shown(j) for j in others])
        target = softmax(scale * alike)
        terms.append(-(target * np.log(softmax(scale * video[i] @ video[others].T))).sum())
        terms.append(-(target * np.log(softmax(scale * frame[i] @ video[others].T))).sum())
    return float(np.mean(terms))


TWINS = torch.tensor([0, 0, 2, 3, 3, 5])  # videos 0 and 1 are twins, so are 3 and 4


@pytest.mark.parametrize("scale", [None, 3.0, 100.0])
@pytest.mark.parametrize("footage", [torch.arange(6), TWINS])
@pytest.mark.parametrize("motion", [None, 0.0, 0.3])
def test_the_term_is_the_documented_formula(scale, footage, motion):
    text, video, frame = _features(0), _features(1), _features(2)
    options = {**({} if scale is None else {"scale": scale}), **({} if motion is None else {"motion": motion})}
    got = example_loss(text, video, frame, footage, **options)
    expected = _reference(text.numpy(), video.numpy(), frame.numpy(), footage.numpy(), scale or EXAMPLE_SCALE,
                          1.0 if motion is None else motion)
    assert abs(float(got) - expected) < 1e-9, (float(got), expected)


def test_below_full_motion_a_twin_pair_counts_as_what_it_shows():
    """Video 0 shows a thing moving left; its twin the thing moving right; pair B the same thing moving up and down;
    video 4 another thing moving left. Its captions as they are find video 4 (the shared direction) more alike than
    pair B; with motion 0 (each footage's captions averaged with its twin's) pair B wins: it shows the same thing."""
    axes = torch.eye(6, dtype=torch.float64)
    thing, other, left, right, up, down = 0.8 * axes[0], 0.8 * axes[1], *axes[2:]
    text = F.normalize(torch.stack([thing + left, thing + right, thing + up, thing + down, other + left]), dim=-1)
    footage = torch.tensor([0, 0, 2, 2, 4])
    own = footage[:, None] == footage[None, :]
    as_they_are, shown = (caption_similarity(text, own, motion=m)[0] for m in (1.0, 0.0))
    assert torch.equal(as_they_are, text[0] @ text.t())
    assert as_they_are[4] > as_they_are[2] == as_they_are[3], as_they_are
    assert shown[2] == shown[3] > shown[4], shown
    halfway = caption_similarity(text, own, motion=0.5)[0]
    assert torch.allclose(halfway, (as_they_are + shown) / 2), (halfway, as_they_are, shown)


def test_a_batch_of_one_footage_gives_zero_with_a_graph():
    text, video, frame = _features(0, n=2), _features(1, n=2).requires_grad_(), _features(2, n=2)
    loss = example_loss(text, video, frame, torch.tensor([4, 4]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(video.grad.abs().sum()) == 0.0


def test_the_captions_are_the_target_and_get_no_gradient():
    text, video, frame = (_features(seed).requires_grad_() for seed in (0, 1, 2))
    example_loss(text, video, frame, TWINS).backward()
    assert text.grad is None, "the caption similarities are the target: the text tower must not be pulled to them"
    assert video.grad.abs().sum() > 0 and frame.grad.abs().sum() > 0


def test_the_term_teaches_videos_and_frames_the_captions_neighbourhoods():
    """Three kinds of caption, two videos each: with this term alone, every video's nearest other video and every
    frame's nearest video come to be of its own kind (they are not at the start)."""
    kinds = np.repeat(np.arange(3), 2)
    text = F.normalize(_features(3, n=3)[kinds] + 0.05 * _features(4), dim=-1)
    video = torch.nn.Parameter(_features(5).clone())
    frame = torch.nn.Parameter(_features(6).clone())

    def nearest_kinds():
        v, f = F.normalize(video.detach(), dim=-1), F.normalize(frame.detach(), dim=-1)
        vv = (v @ v.T).fill_diagonal_(-2)
        return kinds[vv.argmax(1).numpy()], kinds[(f @ v.T).argmax(1).numpy()]

    assert not all((found == kinds).all() for found in nearest_kinds()), "already arranged: the test proves nothing"
    optimiser = torch.optim.Adam([video, frame], lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        example_loss(text, F.normalize(video, dim=-1), F.normalize(frame, dim=-1), torch.arange(6)).backward()
        optimiser.step()
    videos, frames = nearest_kinds()
    assert (videos == kinds).all() and (frames == kinds).all(), (videos, frames, kinds)


def test_one_frame_each_draws_real_frames_only_and_every_one_of_them():
    frames = torch.arange(3 * 4).reshape(3, 4, 1)  # frame j of video i holds 4i + j
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    drawn = [set() for _ in range(3)]
    for _ in range(200):
        chosen = one_frame_each(frames, mask, generator)
        assert chosen.shape == (3, 1, 1)
        for i, value in enumerate(chosen.flatten().tolist()):
            drawn[i].add(value)
    assert drawn == [{0, 1}, {4, 5, 6, 7}, {8}]


@pytest.mark.parametrize("option, value", [("--example-weight", "-1"), ("--example-weight", "nan"),
                                           ("--example-weight", "inf"), ("--example-scale", "0"),
                                           ("--example-scale", "-3"), ("--example-scale", "nan"),
                                           ("--example-motion", "-0.1"), ("--example-motion", "1.5"),
                                           ("--example-motion", "nan")])
def test_a_bad_weight_or_scale_is_refused_in_one_line(tmp_path, capsys, option, value):
    code = main(["train", "--data", str(tmp_path / "m.jsonl"), "--frames", str(tmp_path / "c"), "--out",
                 str(tmp_path / "r"), option, value])
    err = capsys.readouterr().err
    assert code == 2 and option in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_the_loader_gives_twins_one_footage_id_and_every_other_video_its_own():
    from vidsearch.data.loader import LoaderVideo, TrainBatches

    videos = [LoaderVideo("a", "a", (0,), ("x",), twin="b"), LoaderVideo("c", "c", (0,), ("x",)),
              LoaderVideo("b", "b", (0,), ("x",), twin="a"), LoaderVideo("d", "d", (0,), ("x",), twin="gone")]
    batches = TrainBatches(videos, [], None, num_frames=1, seed=0, epoch=0)
    assert batches.footage == [0, 1, 0, 3]


def _twin_source():
    """memory_source's videos in twin pairs (v0 and v1, v2 and v3, ...), twins sharing a batch."""
    import dataclasses

    from vidsearch.data.loader import CacheBatches

    from .conftest import memory_videos

    videos, store = memory_videos()
    videos = [dataclasses.replace(v, twin=f"v{i ^ 1}") for i, v in enumerate(videos)]
    return CacheBatches(videos, store, batch_size=4, num_frames=4, seed=0, workers=0, twins_in_batch=True)


@pytest.mark.parametrize("twins, motion", [(False, 1.0), (True, 0.0), (True, 0.4)])
def test_a_training_step_adds_the_weighted_term_to_the_contrastive_loss(tmp_path, memory_source, twins, motion):
    """The first logged loss of a run with --example-weight 2 is InfoNCE plus 2 × the term (at the run's
    --example-motion), recomputed here from the same starting weights, batch and drawn frames."""
    import json

    from vidsearch.config import TrainConfig
    from vidsearch.eval.evaluate import tokenize_captions
    from vidsearch.train.loop import train
    from vidsearch.train.loss import contrastive_loss

    from .conftest import micro_model

    source = _twin_source() if twins else memory_source
    config = TrainConfig(mode="full", epochs=1, batch_size=4, lr=1e-3, coef_lr=0.5, precision="fp32", workers=0,
                         val_split="none", max_words=16, log_every=1, seed=5, example_weight=2.0,
                         example_motion=motion)
    train(micro_model(), source, config, tmp_path / "run", max_steps=1)
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["loss"]

    model = micro_model().train()
    batch = next(iter(source.epoch(0)))
    frames = model.preprocess_frames(batch.frames)
    stills = one_frame_each(frames, batch.mask, torch.Generator().manual_seed(5 * 1_000_003))
    with torch.no_grad():
        text = model.encode_text(tokenize_captions(model, batch.captions, max_words=16))
        video, frame = model.encode_video(frames, batch.mask), model.encode_video(stills)
        term = example_loss(text, video, frame, batch.footage, motion=motion)
        expected = contrastive_loss(text, video, model.logit_scale) + 2.0 * term
        infonce = float(contrastive_loss(text, video, model.logit_scale))
        as_captions = float(example_loss(text, video, frame, batch.footage))
    assert logged == pytest.approx(float(expected), abs=1e-5), (logged, float(expected))
    assert abs(logged - infonce) > 1e-3, ("the term added nothing", logged, infonce)
    if twins:
        assert len(set(batch.footage.tolist())) < len(batch.footage), batch.footage  # twins in the batch
        assert abs(float(term) - as_captions) > 1e-4, ("--example-motion changed nothing", float(term), as_captions)


def test_example_motion_reaches_the_training_config_and_defaults_to_captions_as_they_are(tmp_path):
    from vidsearch.cli import _train_request, build_parser

    base = ["train", "--data", str(tmp_path / "m.jsonl"), "--frames", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    assert _train_request(build_parser().parse_args(base)).train.example_motion == 1.0
    request = _train_request(build_parser().parse_args([*base, "--example-motion", "0.25"]))
    assert request.train.example_motion == 0.25
