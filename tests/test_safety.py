"""Safety defaults (issue 8): no remote code unless asked, safetensors unless pickles are allowed explicitly,
YAML read with the safe loader only, and names that cannot escape the workspace."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from workbench.cli import main
from workbench.core.config import ModelSection, RunConfig, validate_config
from workbench.core.errors import UserError
from workbench.core.presets import list_presets, save_user_preset
from workbench.core.workspace import Workspace, check_name


# -- trust_remote_code and pickle weights: off unless the user sets them --------------------------------

def test_run_config_defaults_are_safe():
    model = RunConfig().model
    assert model.trust_remote_code is False
    assert model.allow_pickle_weights is False


def test_no_builtin_preset_turns_on_remote_code_or_pickles():
    presets = list_presets(None)
    assert len(presets) >= 10
    for preset in presets:
        model = preset.resolve().model
        assert not model.trust_remote_code, preset.path
        assert not model.allow_pickle_weights, preset.path


class _Recorder:
    """Stands in for a transformers `from_pretrained`: records its keyword arguments, loads nothing."""

    def __init__(self):
        self.kwargs: dict = {}

    def __call__(self, source, **kwargs):
        self.kwargs = kwargs
        raise OSError("recorded")


@pytest.mark.parametrize("user_sets", [False, True], ids=["default", "user-sets-flags"])
def test_engine_passes_the_flags_through(monkeypatch, tmp_path, user_sets):
    import transformers

    from workbench.engine.models import load_model, load_tokenizer

    model_recorder, tokenizer_recorder = _Recorder(), _Recorder()
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_recorder)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_recorder)
    section = ModelSection(name_or_path=str(tmp_path), trust_remote_code=user_sets, allow_pickle_weights=user_sets)
    with pytest.raises(UserError):
        load_model(str(tmp_path), section)
    with pytest.raises(UserError):
        load_tokenizer(str(tmp_path), section)
    assert model_recorder.kwargs["trust_remote_code"] is user_sets
    assert tokenizer_recorder.kwargs["trust_remote_code"] is user_sets
    # None lets transformers fall back to .bin; True refuses anything but safetensors.
    assert model_recorder.kwargs["use_safetensors"] is (None if user_sets else True)


def test_set_override_is_the_only_way_to_remote_code():
    config = validate_config({"model": {"trust_remote_code": True}}, "--set")
    assert config.model.trust_remote_code is True
    with pytest.raises(UserError, match="model.trust_remote_code"):
        validate_config({"model": {"trust_remote_code": "please"}}, "--set")


@pytest.fixture(scope="module")
def pickle_only_model(tiny_llama, tmp_path_factory) -> Path:
    """The tiny llama with its weights as pytorch_model.bin only (torch.save pickle), no safetensors."""
    import torch
    from safetensors.torch import load_file

    directory = tmp_path_factory.mktemp("pickle-only") / "model"
    shutil.copytree(tiny_llama, directory)
    weights = directory / "model.safetensors"
    torch.save(load_file(weights), directory / "pytorch_model.bin")
    weights.unlink()
    return directory


def test_pickle_weights_refused_unless_allowed(pickle_only_model):
    from workbench.engine.models import load_model

    refused = ModelSection(name_or_path=str(pickle_only_model))
    with pytest.raises(UserError) as raised:
        load_model(str(pickle_only_model), refused)
    message = str(raised.value)
    assert "\n" not in message
    assert "no safetensors weights" in message and "--set model.allow_pickle_weights=true" in message
    allowed = ModelSection(name_or_path=str(pickle_only_model), allow_pickle_weights=True)
    model = load_model(str(pickle_only_model), allowed)
    assert model.config.model_type == "llama"


def test_pickle_weights_refused_through_the_cli(pickle_only_model, workspace, capsys):
    code = main(["--workspace", str(workspace.root), "generate", "--model", str(pickle_only_model),
                 "--prompt", "hi", "--max-new-tokens", "1"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in out + err
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "model.allow_pickle_weights" in last
    assert not any(line.startswith("error") for line in err.splitlines()[:-1])  # progress lines, then one error


def test_model_dir_without_weights_is_not_blamed_on_pickles(tiny_llama, tmp_path):
    from workbench.engine.models import load_model

    directory = tmp_path / "no-weights"
    shutil.copytree(tiny_llama, directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(UserError) as raised:
        load_model(str(directory), ModelSection(name_or_path=str(directory)))
    assert "allow_pickle_weights" not in str(raised.value) and "\n" not in str(raised.value)


# -- YAML: the safe loader only --------------------------------------------------------------------------

UNSAFE_YAML = re.compile(r"yaml\.(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all)\s*\("
                         r"|\b(Unsafe|Full|C)?Loader\b")


def test_unsafe_yaml_pattern_catches_the_usual_forms():
    for bad in ("yaml.load(text)", "yaml.unsafe_load(t)", "yaml.load(t, Loader=yaml.Loader)", "yaml.full_load(t)",
                "yaml.load(t, Loader=yaml.UnsafeLoader)"):
        assert UNSAFE_YAML.search(bad), bad
    for good in ("yaml.safe_load(text)", "yaml.safe_dump(obj)", "yaml.safe_load_all(t)", "DataLoader(ds)"):
        assert not UNSAFE_YAML.search(good), good


def test_workbench_reads_yaml_only_with_safe_load():
    sources = sorted((REPO / "workbench").rglob("*.py"))
    assert len(sources) > 30
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for path in sources
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if UNSAFE_YAML.search(line)]
    assert offenders == []
    assert any("yaml.safe_load(" in path.read_text(encoding="utf-8") for path in sources)


def test_yaml_python_tags_are_rejected(tmp_path, capsys):
    """A preset carrying a python/object tag is an invalid-YAML user error, never executed."""
    marker = tmp_path / "pwned"
    preset = tmp_path / "evil.yaml"
    preset.write_text(f"description: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    code = main(["--workspace", str(tmp_path / "ws"), "presets", "show", str(preset)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "evil.yaml" in err and err.count("\n") == 1
    assert not marker.exists()


# -- names cannot escape the workspace ------------------------------------------------------------------

ESCAPING_NAMES = ["", ".", "..", "../x", "../../etc/passwd", "/abs", "/", "a/b", "a\\b", ".hidden", "-flag",
                  "x" * 129, "a\x00b", "name\n", "sp ace", "~", "~root", "런"]


@pytest.mark.parametrize("name", ESCAPING_NAMES, ids=[repr(n)[:20] for n in ESCAPING_NAMES])
def test_check_name_refuses(name):
    with pytest.raises(UserError) as raised:
        check_name(name, "run id")
    assert "\n" not in str(raised.value).replace(repr(name), "")  # one line (the name itself is repr'd)
    assert str(raised.value).startswith("invalid run id")


@pytest.mark.parametrize("name", ["run-20260101-000000-abcd", "a", "A.b_c-1", "x" * 128])
def test_check_name_accepts(name):
    assert check_name(name, "run id") == name


def test_workspace_paths_stay_inside(tmp_path):
    workspace = Workspace.resolve(tmp_path)
    assert workspace.run_dir("r1").parent == workspace.runs
    assert workspace.dataset_dir("d1").parent == workspace.datasets
    for method in (workspace.run_dir, workspace.dataset_dir):
        with pytest.raises(UserError):
            method("../outside")


def test_user_preset_name_cannot_escape(tmp_path):
    workspace = Workspace.resolve(tmp_path / "ws")
    with pytest.raises(UserError, match="invalid preset name"):
        save_user_preset(workspace, "../../evil", {"lora": {"r": 8}})
    assert not any(tmp_path.rglob("*.yaml"))
    saved = save_user_preset(workspace, "mine", {"lora": {"r": 8}})
    assert saved.path.parent == workspace.presets


def test_new_run_id_cannot_escape(tmp_path):
    from workbench.core.newrun import create_run

    workspace = Workspace.resolve(tmp_path / "ws")
    for bad in ("../x", "/tmp/x", ".."):
        with pytest.raises(UserError, match="invalid run id"):
            create_run(workspace, RunConfig(), bad)
    assert not (tmp_path / "x").exists() and not workspace.runs.exists()
