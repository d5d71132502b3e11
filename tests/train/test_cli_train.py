"""synth → frames → train → evaluate through the CLI, on a library small enough for a test."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vidsearch.cli import main
from vidsearch.model.videoclip import VideoTextModel


@pytest.fixture(scope="module")
def library(tmp_path_factory, make_keyframe_library):
    return make_keyframe_library(tmp_path_factory.mktemp("e2e"), videos=10, size=64, seconds=4, frames=4)


def _train(library, out, *extra):
    return main(["train", "--data", str(library / "lib" / "manifest.jsonl"), "--frames", str(library / "cache"),
                 "--out", str(out), "--model", "vidsearch-tiny", "--epochs", "2", "--batch-size", "8",
                 "--frames-per-video", "4", "--workers", "0", "--lr", "1e-3", "--coef-lr", "1", *extra])


def test_train_then_evaluate_on_the_synthetic_library(library, capsys):
    run = library / "run"
    assert _train(library, run) == 0
    assert (run / "best" / "config.json").is_file() and (run / "epoch-2" / "model.safetensors").is_file()
    assert any(json.loads(line).get("event") == "validation" for line in (run / "log.jsonl").read_text().splitlines())
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "epoch-2"), "--data", str(library / "lib" / "manifest.jsonl"),
                 "--frames", str(library / "cache"), "--json", "--dsl", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["videos"] == 2 and result["captions"] == 10
    assert set(result["raw"]["text_to_video"]) == {"R@1", "R@5", "R@10", "MdR", "MnR", "queries"}
    assert "dsl" in result

    aim = library / "aim"
    assert _train(library, aim, "--mode", "aim", "--init", str(run / "best"), "--epochs", "1", "--steps", "1") == 0
    config = json.loads((aim / "state" / "config.json").read_text())
    assert config["model"]["adapters"] is not None and config["trained_groups"] == ["adapters", "head", "ln_post"]
    # Paths as seen from the run directory, none of this machine's; the data was the synthetic library.
    assert {key: config["extra"].get(key) for key in ("init", "data", "training_library")} == \
        {"init": "../run/best", "data": "../lib/manifest.jsonl", "training_library": "synthetic"}, config["extra"]
    assert _train(library, aim, "--mode", "aim", "--init", str(run / "best"), "--epochs", "1", "--resume") == 0
    assert (aim / "epoch-1" / "config.json").is_file()


def test_resume_must_repeat_the_runs_settings(library, capsys):
    out = library / "capped"
    assert _train(library, out, "--epochs", "1", "--steps", "1") == 0
    capsys.readouterr()
    assert _train(library, out, "--epochs", "1", "--resume", "--lr", "5e-4") == 2
    assert "these differ: train" in capsys.readouterr().err
    assert _train(library, out, "--epochs", "1", "--resume") == 0
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
            if "loss" in line] == [3]  # log_every 10: only the last step of the run is logged


def test_a_manifest_without_val_needs_an_explicit_choice(library, tmp_path, capsys):
    import dataclasses

    from vidsearch.data.manifest import load_manifest, save_manifest

    records = [dataclasses.replace(r, split="train") if r.split == "val" else r
               for r in load_manifest(library / "lib" / "manifest.jsonl")]
    manifest = save_manifest(records, library / "lib" / "noval.jsonl")
    args = ["train", "--data", str(manifest), "--frames", str(library / "cache"), "--out", str(tmp_path / "r"),
            "--model", "vidsearch-tiny", "--epochs", "1", "--batch-size", "8", "--frames-per-video", "4",
            "--workers", "0", "--steps", "1"]
    assert main(args) == 2
    assert "--val-split test" in capsys.readouterr().err
    assert main(args + ["--val-split", "test"]) == 0


@pytest.fixture(scope="module")
def init(library):
    """A checkpoint to start from: the tiny model's random weights, saved before any step."""
    assert _train(library, library / "init", "--steps", "0") == 0
    return library / "init" / "state"


def _weights(run):
    return load_file(str(run / "state" / "model.safetensors"))


def test_the_same_seed_gives_bit_identical_weights_and_another_seed_does_not(library, init, tmp_path):
    def aim_run(name, seed):
        out = tmp_path / name
        assert _train(library, out, "--mode", "aim", "--init", str(init), "--epochs", "1", "--steps", "2",
                      "--seed", str(seed)) == 0
        return _weights(out)

    first, again, other = aim_run("first", 7), aim_run("again", 7), aim_run("other", 8)
    assert first.keys() == again.keys() == other.keys()
    assert [name for name in first if not torch.equal(first[name], again[name])] == []
    assert [name for name in first if not torch.equal(first[name], other[name])] != []


@pytest.mark.parametrize("mode, extra, trained_groups", [
    ("aim", (), {"adapters", "ln_post"}),
    ("aim+text", (), {"adapters", "ln_post", "text"}),
    ("full", ("--adapters",), {"adapters", "ln_post", "text", "backbone", "logit_scale"}),
], ids=["aim", "aim+text", "full"])
def test_a_mode_moves_every_tensor_of_its_groups_and_no_other(library, init, tmp_path, mode, extra, trained_groups):
    def run(name, steps):
        out = tmp_path / name
        assert _train(library, out, "--mode", mode, *extra, "--init", str(init), "--epochs", "1", "--warmup", "0",
                      "--steps", str(steps)) == 0
        return _weights(out)

    # Step 0 of the same seeded run is where training starts: the --init weights plus the fresh adapters.
    start, trained, checkpoint = run("start", 0), run("trained", 2), load_file(str(init / "model.safetensors"))
    assert start.keys() == trained.keys() and all(torch.equal(start[name], checkpoint[name]) for name in checkpoint)
    groups = {name: VideoTextModel.group_of(name) for name in trained}
    assert set(groups.values()) >= trained_groups, "the model has tensors in every group the mode trains"
    frozen = [name for name in trained if groups[name] not in trained_groups]
    changed = [name for name in frozen if not torch.equal(trained[name], checkpoint[name])]
    assert changed == [], f"{mode}: {len(changed)} of {len(frozen)} frozen tensors changed"
    unmoved = [name for name in trained if groups[name] in trained_groups and torch.equal(trained[name], start[name])]
    assert unmoved == [], f"{mode}: {len(unmoved)} trained tensors did not move"
