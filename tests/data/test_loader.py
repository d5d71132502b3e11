import numpy as np
import pytest

from vidsearch.data.loader import (CacheBatches, JpegFrames, LoaderVideo, TrainBatches, epoch_plan, frame_positions,
                                   match_videos, pack_frames)
from vidsearch.data.manifest import load_manifest


def test_training_positions_are_random_in_time_order():
    seen = set()
    for seed in range(20):
        positions, mask = frame_positions(30, 12, rng=np.random.default_rng(seed))
        assert len(positions) == 12 and np.all(np.diff(positions) > 0) and positions.min() >= 0 and positions.max() < 30
        assert mask.all()
        seen.add(tuple(positions))
    assert len(seen) == 20


def test_evaluation_positions_are_evenly_spaced_with_both_ends():
    positions, mask = frame_positions(23, 12, rng=None)
    assert positions.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]
    assert frame_positions(12, 12, rng=None)[0].tolist() == list(range(12))
    assert mask.all()


@pytest.mark.parametrize("rng", [None, np.random.default_rng(0)], ids=["eval", "train"])
def test_short_videos_repeat_their_last_frame_and_mask_the_padding(rng):
    positions, mask = frame_positions(3, 5, rng=rng)
    assert positions.tolist() == [0, 1, 2, 2, 2]
    assert mask.tolist() == [True, True, True, False, False]


def _videos(captions_per_video, twins=False):
    return [LoaderVideo(f"v{i}", f"v{i}", (0,), tuple(f"c{i}.{j}" for j in range(n)),
                        twin=(f"v{i ^ 1}" if twins else None)) for i, n in enumerate(captions_per_video)]


def test_an_epoch_uses_every_caption_once_without_repeating_a_video_in_a_batch():
    videos = _videos([5, 5, 5, 5, 5, 3, 1, 1, 1, 2])
    plan = epoch_plan(videos, batch_size=4, seed=0, epoch=0)
    samples = [s for batch in plan for s in batch]
    assert len(samples) == len(set(samples)) == 32  # 33 captions; the last, incomplete batch of 1 is dropped
    assert all(len(batch) == 4 for batch in plan)
    assert all(len({v for v, _ in batch}) == 4 for batch in plan)
    assert plan == epoch_plan(videos, batch_size=4, seed=0, epoch=0)
    assert plan != epoch_plan(videos, batch_size=4, seed=0, epoch=1)


def test_twins_share_a_batch_when_asked():
    videos = _videos([2] * 12, twins=True)
    for batch in epoch_plan(videos, batch_size=4, seed=3, epoch=0, twins_in_batch=True):
        ids = {v for v, _ in batch}
        assert all(v ^ 1 in ids for v in ids)


def test_twins_in_a_batch_take_parallel_captions():
    """Caption j of a video meets caption j of its twin (the same sentence with the direction reversed)."""
    videos = _videos([5] * 8, twins=True)
    pairs = 0
    for epoch in range(3):
        for batch in epoch_plan(videos, batch_size=4, seed=1, epoch=epoch, twins_in_batch=True):
            chosen = dict(batch)
            pairs += sum(chosen[v] == chosen[v ^ 1] for v in chosen)
            assert all(chosen[v] == chosen[v ^ 1] for v in chosen)
    assert pairs == 3 * 40  # every sample, every epoch
    orders = {tuple(c for v, c in sum(epoch_plan(videos, batch_size=4, seed=1, epoch=e, twins_in_batch=True), [])
                    if v == 0) for e in range(3)}
    assert len(orders) > 1  # still a fresh caption order each epoch


class _Store:
    size = 2

    def read(self, video, positions):
        return np.full((len(positions), 2, 2, 3), int(video.cache_id[1:]), dtype=np.uint8) + positions[:, None, None, None].astype(np.uint8)


def test_batches_split_over_ranks_rebuild_the_global_batch():
    videos = [LoaderVideo(f"v{i}", f"v{i}", tuple(range(6)), ("a", "b")) for i in range(8)]
    plan = epoch_plan(videos, batch_size=4, seed=0, epoch=0)
    whole = TrainBatches(videos, plan, _Store(), num_frames=3, seed=0, epoch=0)[1]
    halves = [TrainBatches(videos, plan, _Store(), num_frames=3, seed=0, epoch=0, rank=r, world=2)[1] for r in (0, 1)]
    assert np.array_equal(np.concatenate([h.frames for h in halves]), whole.frames)
    assert sum((h.captions for h in halves), []) == whole.captions
    resumed = TrainBatches(videos, plan, _Store(), num_frames=3, seed=0, epoch=0, start=1)[0]
    assert np.array_equal(resumed.frames, whole.frames)


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused():
    videos = [LoaderVideo(f"v{i}", f"v{i}", tuple(range(6)), ("a",)) for i in range(8)]
    with pytest.raises(ValueError, match="global batch of 6 does not split evenly over 4 ranks"):
        CacheBatches(videos, _Store(), batch_size=6, num_frames=3, seed=0, workers=0, rank=1, world=4)
    assert CacheBatches(videos, _Store(), batch_size=6, num_frames=3, seed=0, workers=0, world=3).steps_per_epoch == 1


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, make_keyframe_library):
    return make_keyframe_library(tmp_path_factory.mktemp("library"), videos=6, size=48, seconds=3, frames=4)


def test_packed_frames_equal_the_cache_jpegs_and_are_reused(small_cache, tmp_path):
    from vidsearch.video.cache import open_cache

    cache = open_cache(small_cache / "cache")
    videos = match_videos(load_manifest(small_cache / "lib" / "manifest.jsonl"), cache, split=None,
                          manifest_dir=small_cache / "lib")
    assert len(videos) == 6 and all(len(v.frames) == 3 for v in videos)
    packed = pack_frames(cache, videos, size=32, out_dir=tmp_path)
    jpeg = JpegFrames(cache, 32)
    positions = np.array([0, 2, 2])
    for video in videos:
        assert np.array_equal(packed.read(video, positions), jpeg.read(video, positions))
    stamp = (tmp_path / "frames-32.npy").stat().st_mtime_ns
    again = pack_frames(cache, videos, size=32, out_dir=tmp_path)
    assert (tmp_path / "frames-32.npy").stat().st_mtime_ns == stamp and again.offsets == packed.offsets


def test_packed_frames_are_packed_again_when_a_video_was_extracted_again(small_cache, tmp_path):
    """The cache's manifest.json no longer changes when videos are added or re-extracted: the pack must notice an
    entry that changed (here: one video's keyframes reversed, as a re-extraction with other frames would)."""
    import dataclasses

    from vidsearch.video.cache import open_cache

    cache = open_cache(small_cache / "cache")
    videos = match_videos(load_manifest(small_cache / "lib" / "manifest.jsonl"), cache, split=None,
                          manifest_dir=small_cache / "lib")
    first = videos[0].cache_id
    entry = cache.entry(first)
    changed = dataclasses.asdict(entry) | {"frames": entry.frames[::-1], "timestamps": entry.timestamps}
    before = pack_frames(cache, videos, size=32, out_dir=tmp_path)
    offset, count = before.offsets[first]
    old_frames = np.array(before.array[offset:offset + count])
    changed_cache = cache.with_entry(changed)
    repacked = pack_frames(changed_cache, videos, size=32, out_dir=tmp_path)
    offset, count = repacked.offsets[first]
    new_frames = np.array(repacked.array[offset:offset + count])
    assert not np.array_equal(new_frames, old_frames), "the pack made before the re-extraction was reused"
    assert np.array_equal(new_frames, old_frames[::-1])
