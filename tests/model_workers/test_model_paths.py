"""Model name -> folder or GGUF resolution (no processes)."""

import json

import pytest

from configs import Settings
from server.model_workers import model_paths
from server.model_workers.model_paths import ModelNotFound, list_local_models, resolve_local_model


def make_settings(tmp_path, **values) -> Settings:
    return Settings(MODEL_ROOT_PATH=tmp_path, **values)


def hf_folder(root, name, architectures=("LlamaForCausalLM",)):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": list(architectures)}))
    return folder


def test_the_packaged_default_resolves_to_its_gguf(tmp_path):
    model = resolve_local_model("SmolLM2-135M-Instruct", make_settings(tmp_path))
    assert model.gguf_file and model.gguf_file.endswith(".gguf")
    assert (model.folder / model.gguf_file).is_file()


def test_a_folder_under_the_model_root_wins_over_the_package(tmp_path):
    folder = hf_folder(tmp_path, "SmolLM2-135M-Instruct")
    model = resolve_local_model("SmolLM2-135M-Instruct", make_settings(tmp_path))
    assert model.folder == folder and model.gguf_file is None


def test_configured_path_and_gguf_folder(tmp_path):
    gguf_dir = tmp_path / "elsewhere"
    gguf_dir.mkdir()
    (gguf_dir / "tiny.Q4.gguf").write_bytes(b"GGUF")
    settings = make_settings(tmp_path, FSCHAT_MODEL_WORKERS={"tiny": {"path": str(gguf_dir)}})
    model = resolve_local_model("tiny", settings)
    assert model.folder == gguf_dir and model.gguf_file == "tiny.Q4.gguf"


def test_an_unknown_name_says_where_to_put_the_model(tmp_path):
    with pytest.raises(ModelNotFound) as info:
        resolve_local_model("no-such-model", make_settings(tmp_path))
    message = str(info.value)
    assert "no-such-model" in message and str(tmp_path / "no-such-model") in message
    assert "ONLINE_LLM_MODEL" in message


@pytest.mark.parametrize("name", ["../etc", "..", ".hidden"])
def test_names_do_not_escape_the_model_root(tmp_path, name):
    root = tmp_path / "models"
    hf_folder(tmp_path, "etc")  # a real model folder just outside the model root
    with pytest.raises(ModelNotFound):
        resolve_local_model(name, make_settings(root))


def test_local_listing_has_causal_lms_but_not_embedding_models(tmp_path):
    hf_folder(tmp_path, "Qwen2.5-0.5B-Instruct", ("Qwen2ForCausalLM",))
    embed = hf_folder(tmp_path, "bge-small-zh", ("BertModel",))
    (embed / "modules.json").write_text("[]")
    names = list_local_models(make_settings(tmp_path))
    assert "Qwen2.5-0.5B-Instruct" in names
    assert "SmolLM2-135M-Instruct" in names
    assert "bge-small-zh" not in names


def test_the_conversion_cache_lives_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATCHAT_MODEL_CACHE", str(tmp_path / "cache"))
    model = resolve_local_model("SmolLM2-135M-Instruct", make_settings(tmp_path))
    assert model_paths.cached_folder(model) is None
    folder, gguf = model_paths.hf_folder_for(model)
    assert (folder, gguf) == (model.folder, model.gguf_file)
