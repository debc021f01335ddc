import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhelpers import data


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _file_url(path: Path) -> str:
    return path.resolve().as_uri()


def test_registry_entries_are_complete():
    for name, dataset in data.REGISTRY.items():
        assert dataset.name == name
        assert len(dataset.sha256) == 64 and int(dataset.sha256, 16) >= 0
        assert dataset.license and dataset.attribution and dataset.description
        # every dataset has an offline path through the package index
        assert any(isinstance(s, data.WheelSource) for s in dataset.sources)


def test_manifest_lists_every_dataset_and_is_up_to_date():
    manifest = (Path(__file__).parents[1] / "data" / "MANIFEST.md").read_text()
    for dataset in data.REGISTRY.values():
        assert f"| `{dataset.name}` | `{dataset.filename}` |" in manifest
        assert dataset.sha256 in manifest
    assert manifest == data.manifest_markdown(), "regenerate data/MANIFEST.md"


def test_fetch_real_corpus_verifies_hash(cache):
    path = data.fetch("tiny-shakespeare", cache)
    raw = path.read_bytes()
    assert len(raw) == 1_115_394
    assert hashlib.sha256(raw).hexdigest() == data.TINY_SHAKESPEARE.sha256
    assert raw.startswith(b"First Citizen:")


def test_fetch_skips_bad_sources_and_uses_first_good_one(cache, tmp_path):
    good = data.fetch("tiny-shakespeare")  # the shared cache copy
    corrupt = tmp_path / "corrupt.txt"
    corrupt.write_bytes(good.read_bytes()[:-1] + b"?")
    sources = (
        data.UrlSource(_file_url(tmp_path / "missing.txt")),
        data.UrlSource(_file_url(corrupt)),
        data.UrlSource(_file_url(good)),
    )
    path = data.fetch("tiny-shakespeare", cache, sources=sources)
    assert path.read_bytes() == good.read_bytes()
    assert path.parent == cache
    assert not list(cache.glob("*.tmp"))  # nothing left half-written


def test_fetch_failure_lists_every_source_and_the_manual_path(cache, tmp_path):
    corrupt = tmp_path / "corrupt.txt"
    corrupt.write_bytes(b"not shakespeare")
    sources = (
        data.UrlSource(_file_url(tmp_path / "missing.txt")),
        data.UrlSource(_file_url(corrupt)),
    )
    with pytest.raises(data.DataUnavailableError) as error:
        data.fetch("tiny-shakespeare", cache, sources=sources)
    message = str(error.value)
    assert "missing.txt" in message and "corrupt.txt" in message
    assert "SHA-256" in message
    assert str(cache / "tiny-shakespeare.txt") in message
    assert not (cache / "tiny-shakespeare.txt").exists()


def test_corrupted_cache_file_is_replaced(cache):
    cache.mkdir(parents=True)
    (cache / "tiny-shakespeare.txt").write_text("tampered")
    good = data.fetch("tiny-shakespeare")
    path = data.fetch("tiny-shakespeare", cache, sources=(data.UrlSource(_file_url(good)),))
    assert path.read_bytes() == good.read_bytes()


def test_unknown_dataset_name_is_a_clear_error():
    with pytest.raises(KeyError, match="name='nope'"):
        data.fetch("nope")


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert data.cache_dir() == tmp_path / "env"
    assert data.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(data.CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "llmhelpers"


def test_standard_split():
    text = data.load_text()
    train, val = data.train_val_split(text)
    assert train + val == text
    assert len(train) == int(len(text) * 0.9)
    with pytest.raises(ValueError, match="train_fraction"):
        data.train_val_split(text, 1.0)


def test_real_tiktoken_gpt2_works_from_seeded_cache(tmp_path):
    """In a fresh process with an empty tiktoken cache, seeding makes get_encoding work."""
    code = (
        "from llmhelpers import data; import tiktoken\n"
        "data.seed_tiktoken_gpt2_cache()\n"
        "enc = tiktoken.get_encoding('gpt2')\n"
        "print(enc.encode('notes <|endoftext|> more', allowed_special='all'))\n"
    )
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(tmp_path / "tiktoken"))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[17815, 220, 50256, 517]"
    assert len(list((tmp_path / "tiktoken").iterdir())) == 2


def test_cache_path_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="LLMHELPERS_CACHE"):
        data.cache_dir(blocker)


def test_unknown_dataset_name_of_the_wrong_type():
    with pytest.raises(KeyError, match="name="):
        data.fetch(["tiny-shakespeare"])


def test_disabled_tiktoken_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert data.tiktoken_cache_dir() is None
    with pytest.raises(RuntimeError, match="TIKTOKEN_CACHE_DIR"):
        data.seed_tiktoken_gpt2_cache()


def test_load_text_keeps_line_endings_exactly(cache):
    raw = data.fetch("tiny-shakespeare").read_bytes()
    assert data.load_text("tiny-shakespeare").encode("utf-8") == raw
