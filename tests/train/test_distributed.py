"""`torchrun -m vidsearch train` with 2 gloo ranks on the CPU against `python -m vidsearch train` on the whole batch.

Both start from one saved tiny checkpoint (`--init`), so they begin with equal parameters. Equal, not identical: two
ranks sum the loss's gradient in another order (gather, all-reduce average), and Adam turns a gradient's rounding
into up to about lr × 1e-3 of a parameter (measured: 1.2e-7 at lr 1e-4), so parameters are checked to 1e-6;
everything counted (steps, epochs, schedule, optimiser step counts, which process logs) must agree exactly.
"""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vidsearch.model.checkpoint import save_checkpoint
from vidsearch.model.source import ModelSource

STEPS = 2


@pytest.fixture(scope="module")
def library(tmp_path_factory, make_keyframe_library):
    root = make_keyframe_library(tmp_path_factory.mktemp("ddp"), videos=8, size=64, seconds=2, frames=2)
    save_checkpoint(ModelSource(backbone="vidsearch-tiny", num_frames=2).load(), root / "init",
                    trained_groups=["backbone"])
    return root


def _train_args(library, out, *extra: str) -> list[str]:
    return ["-m", "vidsearch", "train", "--data", str(library / "lib" / "manifest.jsonl"),
            "--frames", str(library / "cache"), "--out", str(out), "--init", str(library / "init"),
            "--epochs", "1", "--batch-size", "4", "--frames-per-video", "2", "--workers", "0", "--lr", "1e-4",
            "--coef-lr", "1", "--precision", "fp32", "--val-split", "none", "--log-every", "1", *extra]


def _single(library, out, *extra: str) -> None:
    done = subprocess.run([sys.executable, *_train_args(library, out, *extra)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _two_ranks(torchrun, library, out, *extra: str) -> None:
    done = torchrun(2, *_train_args(library, out, *extra))
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(library, torchrun):
    """The same 2 steps by one process (`single`) and by two gloo ranks (`ranks`)."""
    _single(library, library / "single", "--steps", str(STEPS))
    _two_ranks(torchrun, library, library / "ranks", "--steps", str(STEPS))
    return library / "single", library / "ranks"


def _state(run) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    state = run / "state"
    trainer = json.loads((state / "trainer.json").read_text())
    return load_file(str(state / "model.safetensors")), load_file(str(state / "optimizer.safetensors")), trainer


def _losses(run) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(line["step"], line["loss"]) for line in lines if "loss" in line]


def _assert_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, atol: float) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=atol, msg=key)


def test_two_ranks_take_the_steps_of_one_process_on_the_whole_batch(runs, library):
    single, ranks = runs
    (one, one_optimizer, one_trainer), (two, two_optimizer, two_trainer) = _state(single), _state(ranks)
    initial = load_file(str(library / "init" / "model.safetensors"))
    assert any(not torch.equal(one[k], initial[k]) for k in one), "training changed nothing"
    _assert_close(two, one, atol=1e-6)
    _assert_close({k: v for k, v in two_optimizer.items() if k.startswith("state/")},
                  {k: v for k, v in one_optimizer.items() if k.startswith("state/")}, atol=1e-6)
    assert two_trainer["progress"] == one_trainer["progress"] and one_trainer["progress"]["step"] == STEPS
    assert two_trainer["scheduler"] == one_trainer["scheduler"]
    assert two_trainer["optimizer_scalars"] == one_trainer["optimizer_scalars"]
    # Rank 0 alone logs: one line per step, with the global batch's loss.
    one_losses, two_losses = _losses(single), _losses(ranks)
    assert [step for step, _ in two_losses] == [step for step, _ in one_losses] == [1, 2]
    assert [loss for _, loss in two_losses] == pytest.approx([loss for _, loss in one_losses], abs=1e-6)


@pytest.mark.slow
def test_a_run_resumes_on_another_number_of_ranks(runs, library, torchrun, tmp_path):
    """2 ranks → resumed by 1 process, and 1 process → resumed by 2 ranks, both continue the same run."""
    single, ranks = runs
    for run in runs:
        shutil.copytree(run, tmp_path / run.name)
    _single(library, tmp_path / "ranks", "--steps", str(2 * STEPS), "--resume")
    _two_ranks(torchrun, library, tmp_path / "single", "--steps", str(2 * STEPS), "--resume")
    _single(library, tmp_path / "straight", "--steps", str(2 * STEPS))
    straight, _, straight_trainer = _state(tmp_path / "straight")
    for name in ("ranks", "single"):
        model, _, trainer = _state(tmp_path / name)
        assert trainer["progress"] == straight_trainer["progress"] and trainer["progress"]["step"] == 2 * STEPS
        assert trainer["scheduler"] == straight_trainer["scheduler"]
        assert [step for step, _ in _losses(tmp_path / name)] == [1, 2, 3, 4]
        _assert_close(model, straight, atol=1e-6)
