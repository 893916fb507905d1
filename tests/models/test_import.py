"""Importing models: local Hugging Face directories, known names, and the errors for everything else."""

import json
import shutil

import pytest

from bitswarm.models import ModelError
from bitswarm.models.generate import generate
from bitswarm.models.importer import import_model


def _model_dir(tiny_model_store, tmp_path):
    s, cid = tiny_model_store
    d = tmp_path / "my-model"
    shutil.copytree(s.checkout(cid), d)
    return d


def test_import_local_directory_keeps_its_cid(store, tiny_model_store, tmp_path):
    d = _model_dir(tiny_model_store, tmp_path)
    assert import_model(store, str(d)) == tiny_model_store[1]
    assert store.label(tiny_model_store[1]) == "my-model"


def test_import_follows_hf_cache_symlinks(store, tiny_model_store, tmp_path):
    d = _model_dir(tiny_model_store, tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for f in d.iterdir():
        target = blobs / f.name
        f.rename(target)
        f.symlink_to(target)
    assert import_model(store, str(d)) == tiny_model_store[1]


def test_unknown_name_lists_known_names(store):
    with pytest.raises(ModelError, match="unknown model 'gpt-17'.*Known names: smollm2-135m-instruct"):
        import_model(store, "gpt-17")


def test_non_llama_directory_is_refused(store, tiny_model_store, tmp_path):
    d = _model_dir(tiny_model_store, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ModelError, match="'gpt2' model; bitswarm runs Llama-family models"):
        import_model(store, str(d))


@pytest.mark.parametrize(
    "remove, message",
    [("config.json", "no config.json"), ("model.safetensors", "no weights"), ("tokenizer.json", "no tokenizer")],
)
def test_incomplete_directory_is_refused(store, tiny_model_store, tmp_path, remove, message):
    d = _model_dir(tiny_model_store, tmp_path)
    (d / remove).unlink()
    with pytest.raises(ModelError, match=message):
        import_model(store, str(d))
    assert store.list() == []


def test_generate_with_tiny_model_is_deterministic(tiny_model_store):
    s, cid = tiny_model_store
    a = generate(s, cid, "hello", max_new_tokens=12)
    b = generate(s, cid, "hello", max_new_tokens=12)
    assert a.text == b.text and 1 <= a.new_tokens <= 12


def test_generate_refuses_a_file_blob_and_too_long_requests(tiny_model_store, store, tmp_path):
    f = tmp_path / "f"
    f.write_text("not a model")
    with pytest.raises(ModelError, match="not a model directory"):
        generate(store, store.put(f), "hi")
    s, cid = tiny_model_store
    with pytest.raises(ModelError, match="exceeds the model's context of 1024"):
        generate(s, cid, "hi", max_new_tokens=2000)


def test_smollm2_import_and_answer(smollm2_store):
    s, cid = smollm2_store
    assert s.label(cid) == "smollm2-135m-instruct"
    cfg = json.loads((s.checkout(cid) / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg
    result = generate(s, cid, "What is the capital of France?", max_new_tokens=16)
    assert "Paris" in result.text


def test_smollm2_second_import_reuses_the_conversion(smollm2_store, monkeypatch):
    from bitswarm.models import gguf_import

    def no_conversion(*a, **k):
        raise AssertionError("converted again although the GGUF did not change")

    monkeypatch.setattr(gguf_import, "convert_gguf", no_conversion)
    s, cid = smollm2_store
    assert import_model(s, "smollm2-135m-instruct") == cid
