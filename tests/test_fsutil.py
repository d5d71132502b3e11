import stat

from vidsearch.fsutil import atomic_write_text


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_are_readable_by_others_unless_secret(tmp_path):
    atomic_write_text(tmp_path / "manifest.json", "{}")
    atomic_write_text(tmp_path / "site.secret", "key", mode=0o600)
    assert _mode(tmp_path / "manifest.json") == 0o644
    assert _mode(tmp_path / "site.secret") == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_site_secret_is_private(tmp_path):
    from vidsearch.web.setup import secret_key

    key = secret_key(tmp_path)
    assert len(key) >= 50 and _mode(tmp_path / "site.secret") == 0o600
    assert secret_key(tmp_path) == key
