"""`vidsearch demo` on a small library: every stage runs once, a second run reuses everything."""

from vidsearch.cli import main as cli
from vidsearch.demo import SHIPPED_CHECKPOINT, held_out_captions, prepare_demo
from vidsearch.model.checkpoint import load_checkpoint
from vidsearch.store.store import Store


def test_demo_builds_once_then_reuses_everything(tmp_path):
    first = prepare_demo(workdir=tmp_path / "demo", videos=12)
    store = Store.open(first.paths.store)
    assert len(store.videos()) == 12 and set(first.seconds) == {"synth", "frames", "index"}
    assert (first.paths.store / "site.sqlite3").is_file()
    assert store.fingerprint == load_checkpoint(SHIPPED_CHECKPOINT).fingerprint
    assert held_out_captions(first.paths)
    prepare_demo(workdir=tmp_path / "demo", videos=12)
    assert Store.open(first.paths.store).version == store.version  # nothing re-indexed


def test_demo_command_prepares_without_serving(tmp_path, capsys):
    assert cli(["demo", "--workdir", str(tmp_path / "demo"), "--videos", "8", "--no-serve"]) == 0
    assert "demo ready" in capsys.readouterr().out
