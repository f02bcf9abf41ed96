"""What identifies an embedding model's vectors: its name, dimension and a digest of its weights.

The digest must be cheap, since it is checked whenever a knowledge base is used. Hashing gigabytes of
weights at each start is not; trusting sizes and mtimes alone is not enough (a copied model keeps its size,
a reinstalled one gets new mtimes). So a local model's digest covers, for every file of its folder, the
relative name and size, the whole content of small files (configs, tokenizer, up to 1 MiB) and three
64 KiB samples (start, middle, end) of larger ones (weights). Retrained or swapped weights change every
sample; a reinstall of the same files changes nothing. Results are kept per process, keyed by the files'
sizes and mtimes, so a check costs a directory listing. An online model's digest covers its endpoint and
upstream model name (its weights cannot be seen from here).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from configs import Settings, get_settings
from server.knowledge_base.embeddings.local import resolve_model_path

SMALL_FILE_BYTES = 1 << 20
SAMPLE_BYTES = 64 * 1024

_digests: dict[tuple, str] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ModelFingerprint:
    name: str
    weights: str
    dimension: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ModelFingerprint | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["name"]), str(data["weights"]), data.get("dimension"))
        except (ValueError, KeyError, TypeError):
            return None

    def short(self) -> str:
        return f"{self.name} (dimension {self.dimension}, weights {self.weights[:12]})"


def weights_digest(name: str, settings: Settings | None = None) -> str:
    """A digest that changes when the model behind ``name`` changes (see the module's docstring)."""
    settings = settings or get_settings()
    online = settings.ONLINE_EMBEDDING_MODELS.get(name)
    if online is not None:
        described = json.dumps({"url": online.api_base_url.rstrip("/"), "model": online.model_name})
        return "online:" + hashlib.sha256(described.encode()).hexdigest()
    path = resolve_model_path(name, settings)
    if path is None:
        return "missing"
    return _folder_digest(path)


def model_fingerprint(name: str, dimension: int | None = None) -> ModelFingerprint:
    return ModelFingerprint(name, weights_digest(name), dimension)


def vector_cache_namespace(backend) -> str:
    """Key prefix for cached vectors: weights and dtype, since a cached vector must equal a fresh one."""
    return f"{backend.name}|{weights_digest(backend.name)}|{getattr(backend, 'dtype', '')}|{backend.dimension}"


def _folder_files(folder: Path) -> list[tuple[str, int, int]]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(names):
            path = Path(root) / name
            stat = path.stat()
            files.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return files


def _folder_digest(folder: Path) -> str:
    files = _folder_files(folder)
    key = (str(folder), tuple(files))
    with _lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.sha256()
    for relative, size, _mtime in files:
        digest.update(f"{relative}\0{size}\0".encode())
        with open(folder / relative, "rb") as handle:
            if size <= SMALL_FILE_BYTES:
                digest.update(handle.read())
                continue
            for offset in (0, size // 2, size - SAMPLE_BYTES):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE_BYTES))
    result = digest.hexdigest()
    with _lock:
        _digests[key] = result
    return result
