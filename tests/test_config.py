"""The one config model, its presets and `radfusion config`."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.config import PRESETS, StudyConfig, load_preset, radiomics_params_path

runner = CliRunner()


@pytest.mark.parametrize("name", PRESETS)
def test_presets_list_every_field_and_round_trip(name):
    cfg = load_preset(name)
    shown = runner.invoke(app, ["config", "show", name])
    assert shown.exit_code == 0
    raw = yaml.safe_load(shown.output)
    # the shipped YAML spells out every setting, so users see what they can change
    assert raw == yaml.safe_load(cfg.to_yaml())
    assert StudyConfig.model_validate(raw) == cfg


def test_paper_preset_is_the_paper():
    p = load_preset("paper")
    assert (p.split.train, p.split.val, p.split.test) == (0.70, 0.15, 0.15)
    assert p.preprocess.size == 500 and p.augment.factor == 10
    assert not p.augment.augment_validation
    assert p.selection.icc_threshold == 0.80
    assert p.deep.depth == 101 and p.deep.arms == ["1ch", "2ch"]
    assert p.models.classifiers == ["LR", "SVM", "KNN", "RF", "MLP", "XGBoost", "LightGBM"]
    assert radiomics_params_path(p.radiomics.params).is_file()


def test_user_file_with_preset_base_and_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    f = tmp_path / "study.yaml"
    f.write_text(
        "preset: demo\nname: mine\ndata:\n  manifest: data/manifest.csv\ndeep:\n  depth: 34\n"
    )
    cfg = StudyConfig.from_yaml(f)
    assert cfg.name == "mine" and cfg.deep.depth == 34
    assert cfg.deep.image_size == load_preset("demo").deep.image_size  # inherited
    assert cfg.data.manifest == (tmp_path / "data" / "manifest.csv").resolve()
    res = runner.invoke(app, ["config", "check", str(f)])
    assert res.exit_code == 0 and "depth: 34" in res.output


def test_bad_configs_are_refused_clearly(tmp_path):
    with pytest.raises(ValidationError, match="sum to 1"):
        StudyConfig.model_validate({"split": {"train": 0.8, "val": 0.15, "test": 0.15}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        StudyConfig.model_validate({"deep": {"dpeth": 50}})  # a typo is not silently ignored
    f = tmp_path / "bad.yaml"
    f.write_text("deep:\n  depth: 42\n")
    res = runner.invoke(app, ["config", "check", str(f)])
    assert res.exit_code == 2
    res = runner.invoke(app, ["config", "show", "nature2027"])
    assert res.exit_code == 2


def test_every_command_has_help():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"validate", "synth", "demo"} <= set(commands)
    for cmd in [*commands, "config", "config show", "config check"]:
        r = runner.invoke(app, [*cmd.split(), "--help"])
        assert r.exit_code == 0, cmd
        assert "Usage" in r.output


def test_combat_with_the_label_as_covariate_is_refused(tmp_path):
    f = tmp_path / "study.yaml"
    f.write_text("harmonization: {method: combat, covariates: [age, label]}\n")
    res = runner.invoke(app, ["config", "check", str(f)])
    assert res.exit_code == 2
    assert "must not contain 'label'" in res.output and "new patients" in res.output
    assert "Traceback" not in res.output
    f.write_text("harmonization: {method: combat, covariates: [age]}\n")
    assert runner.invoke(app, ["config", "check", str(f)]).exit_code == 0


@pytest.mark.parametrize("command", ["run", "config check"])
def test_a_name_that_is_no_shipped_parameter_file_is_refused_at_config_time(tmp_path, command):
    # 'demo' is a preset, not a PyRadiomics parameter file: refused when the config is
    # read (exit 2, one line naming the choices), before any stage or run folder
    f = tmp_path / "study.yaml"
    f.write_text(f"preset: demo\noutput_dir: {tmp_path / 'run'}\nradiomics: {{params: demo}}\n")
    res = runner.invoke(app, [*command.split(), str(f)])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "radiomics.params 'demo'" in lines[0] and "'paper'" in lines[0]
    assert not (tmp_path / "run").exists()
    # a path (folder or suffix) is the user's own file, resolved against the config's folder
    (tmp_path / "mine.yaml").write_text("setting: {binWidth: 5}\n")
    f.write_text("preset: demo\nradiomics: {params: mine.yaml}\n")
    assert StudyConfig.from_yaml(f).radiomics.params == str(tmp_path / "mine.yaml")


def test_config_errors_are_one_line_naming_each_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("models: {classifiers: [LR, Foo]}\ndeep: {depth: 42}\n")
    res = runner.invoke(app, ["config", "check", str(f)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert "models.classifiers.1: Input should be 'LR', 'SVM'" in lines[0]
    assert "deep.depth:" in lines[0]
