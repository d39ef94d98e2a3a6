"""Untrusted files do not run code: YAML records, model folders with custom code, pickle weights.

Each hostile file would create a marker file if its code ran; each test checks that the load
fails with a clear error and that the marker does not exist.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from unlearn_kb.errors import ModelLoadError, RegistryError
from unlearn_kb.registry import load_registry


def test_a_yaml_record_with_a_python_tag_is_rejected_without_running_it(fixture_root, tmp_path):
    load_registry(fixture_root)  # valid as it is: the hostile record below is the only problem
    marker = tmp_path / "pwned"
    (fixture_root / "methods" / "evil.yaml").write_text(
        f"id: evil\nname: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RegistryError) as caught:
        load_registry(fixture_root)
    assert any("evil.yaml" in str(p) for p in caught.value.problems)
    assert all("evil.yaml" in str(p) for p in caught.value.problems)
    assert not marker.exists()


@pytest.fixture
def custom_code_model(tmp_path):
    """A model folder whose config asks for its own Python code, which would touch a marker."""
    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder, marker


def test_model_code_from_a_folder_runs_only_with_trust_remote_code(custom_code_model):
    from unlearn_kb.engine.models import load_model

    folder, marker = custom_code_model
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_model(folder)
    assert not marker.exists()


class _Payload:
    """Unpickling this calls ``Path(marker).touch()``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle_model(folder: Path, tiny_model_dir: Path, extra: object | None) -> None:
    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_model_dir, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    payload = dict(state)
    if extra is not None:
        payload["hostile"] = extra
    torch.save(payload, folder / "pytorch_model.bin")


def test_allow_pickle_loads_plain_tensors(tiny_model_dir, tmp_path):
    from unlearn_kb.engine.models import load_model

    folder = tmp_path / "pickled"
    _pickle_model(folder, tiny_model_dir, None)
    with pytest.raises(ModelLoadError, match="--allow-pickle"):
        load_model(folder)
    model, _ = load_model(folder, allow_pickle=True)
    assert sum(p.numel() for p in model.parameters()) > 0
    expected = load_model(tiny_model_dir)[0].state_dict()  # the pickled weights, not a random init
    assert all(torch.equal(tensor, expected[name]) for name, tensor in model.state_dict().items())


def test_allow_pickle_still_refuses_a_pickle_that_runs_code(tiny_model_dir, tmp_path):
    from unlearn_kb.engine.models import load_model

    folder = tmp_path / "hostile"
    marker = tmp_path / "pwned"
    _pickle_model(folder, tiny_model_dir, _Payload(marker))
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        load_model(folder, allow_pickle=True)
    assert not marker.exists(), "torch.load ran code from the pickle: weights_only was not in force"
