import dataclasses

import av
import numpy as np
import pytest

from vidsearch.cli import main
from vidsearch.data.manifest import load_manifest
from vidsearch.data.synthetic import (COLOURS, DIRECTION_WORDS, OPPOSITE, SHAPE_WORDS, captions_for,
                                      generate_library, pair_records, parse_caption, plan_library, random_spec,
                                      render_clip, shape_mask)

SPECS = [random_spec(np.random.default_rng(seed)) for seed in range(40)]


def _shape_centres(clip, colour):
    """Centre (x, y) of the pixels painted in the shape's colour, per frame."""
    masks = np.all(clip == np.array(COLOURS[colour], dtype=np.uint8), axis=-1)
    return np.array([(np.nonzero(mask)[1].mean(), np.nonzero(mask)[0].mean()) for mask in masks])


@pytest.mark.parametrize("spec", SPECS[:12])
def test_twin_frames_are_the_frames_reversed(spec):
    clip = render_clip(spec, frames=10, size=48)
    assert clip.dtype == np.uint8 and clip.shape == (10, 48, 48, 3)
    np.testing.assert_array_equal(render_clip(spec.twin(), frames=10, size=48), clip[::-1])
    assert spec.twin().direction == OPPOSITE[spec.direction] and spec.twin().twin() == spec


@pytest.mark.parametrize("spec", SPECS[:12])
def test_the_shape_moves_the_way_the_caption_says(spec):
    for clip_spec in (spec, spec.twin()):
        centres = _shape_centres(render_clip(clip_spec, frames=8, size=64), clip_spec.colour)
        step = np.diff(centres, axis=0)
        axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[clip_spec.direction]
        assert np.all(step[:, axis] * sign > 1.5), step  # several pixels every frame along the direction
        assert np.all(np.abs(step[:, 1 - axis]) < 0.5)  # and none across it


def test_every_shape_renders_inside_the_frame():
    for shape in SHAPE_WORDS:
        for spec in SPECS[:8]:
            clip = render_clip(dataclasses.replace(spec, shape=shape), frames=4, size=64)
            painted = np.all(clip == np.array(COLOURS[spec.colour], dtype=np.uint8), axis=-1)
            edges = np.concatenate([painted[:, 0], painted[:, -1], painted[:, :, 0], painted[:, :, -1]])
            assert painted.sum(axis=(1, 2)).min() > 40 and not edges.any()


def test_painting_near_the_shape_equals_testing_every_pixel():
    for shape in SHAPE_WORDS:
        spec = dataclasses.replace(SPECS[0], shape=shape, radius=0.13, texture=0.0)
        first = render_clip(spec, frames=2, size=64)[0]
        ys, xs = (np.mgrid[0:64, 0:64] + 0.5) / 64
        expected = shape_mask(shape, xs - spec.start[0], ys - spec.start[1], spec.radius)
        np.testing.assert_array_equal(np.all(first == np.array(COLOURS[spec.colour], dtype=np.uint8), axis=-1),
                                      expected)


def test_twin_captions_differ_only_in_direction():
    for spec in SPECS:
        captions = captions_for(spec, np.random.default_rng(7))
        twin_captions = captions_for(spec.twin(), np.random.default_rng(7))
        assert len(set(captions)) == 5
        for text, twin_text in zip(captions, twin_captions):
            assert parse_caption(text) == (spec.colour, spec.shape, spec.direction)
            assert parse_caption(twin_text) == (spec.colour, spec.shape, OPPOSITE[spec.direction])


@pytest.mark.parametrize("text, parsed", [
    ("a red ball slides leftwards", ("red", "circle", "left")),
    ("The YELLOW plus sign drifts towards the top", ("yellow", "cross", "up")),
    ("a box coloured purple moves down", ("purple", "square", "down")),
    ("a green rhombus travels to the right over a dark background", ("green", "diamond", "right")),
    ("a dog on a beach", (None, None, None)),
])
def test_parse_caption(text, parsed):
    assert parse_caption(text) == parsed


def test_vocabulary_covers_four_directions_and_six_shapes():
    assert sorted(DIRECTION_WORDS) == ["down", "left", "right", "up"]
    assert len(SHAPE_WORDS) == 6 and len(COLOURS) == 6


def test_plan_is_deterministic_and_keeps_twins_in_one_split():
    plan = plan_library(videos=40, seed=5)
    assert plan == plan_library(videos=40, seed=5) and plan != plan_library(videos=40, seed=6)
    assert [p.split for p in plan].count("test") == 4 and [p.split for p in plan].count("val") == 2
    forward, backward = pair_records(plan[0])
    assert (forward.video_id, forward.twin, backward.video_id, backward.twin) == (
        "syn00000a", "syn00000b", "syn00000b", "syn00000a")
    assert forward.split == backward.split and forward.category == backward.category == plan[0].spec.shape


@pytest.mark.parametrize("videos", [0, 3])
def test_plan_needs_an_even_number_of_videos(videos):
    with pytest.raises(ValueError, match="even number of videos"):
        plan_library(videos=videos, seed=0)


def _decode(path):
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_library_on_disk_is_h264_with_a_loadable_manifest(tmp_path):
    manifest = generate_library(tmp_path / "lib", videos=6, seed=1, size=32, seconds=2.0, fps=4.0)
    records = load_manifest(manifest)
    assert [r.video_id for r in records] == ["syn00000a", "syn00000b", "syn00001a", "syn00001b", "syn00002a",
                                             "syn00002b"]
    plan = plan_library(videos=6, seed=1)
    for pair, (forward, backward) in zip(plan, zip(records[::2], records[1::2])):
        expected = render_clip(pair.spec, frames=8, size=32).astype(np.int16)
        decoded, decoded_twin = _decode(forward.source_path(tmp_path / "lib")), _decode(
            backward.source_path(tmp_path / "lib"))
        assert decoded.shape == (8, 32, 32, 3)
        assert np.abs(decoded - expected).mean() < 6  # lossy, but the same picture
        assert np.abs(decoded_twin - expected[::-1]).mean() < 6


def test_library_is_reproducible_for_a_seed(tmp_path):
    first = generate_library(tmp_path / "a", videos=4, seed=2, size=32, seconds=1.0, fps=4.0)
    second = generate_library(tmp_path / "b", videos=4, seed=2, size=32, seconds=1.0, fps=4.0)
    assert first.read_bytes() == second.read_bytes()
    for record in load_manifest(first):
        assert (tmp_path / "a" / record.source).read_bytes() == (tmp_path / "b" / record.source).read_bytes()


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "lib"
    args = ["synth", "--out", str(out), "--videos", "2", "--size", "32", "--seconds", "1", "--fps", "4"]
    assert main(args) == 0
    assert len(load_manifest(out / "manifest.jsonl")) == 2
    assert main([*args[:3], "--videos", "3"]) == 2
    assert "even number of videos" in capsys.readouterr().err
