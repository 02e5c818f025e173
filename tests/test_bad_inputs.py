"""Every bad input a hostile tester tried ends in a named error (exit 2) or a visible warning.

One table drives the command line: each row builds its input in a fresh folder, runs
one ``radfusion`` command and states the exit status and a fragment of the message.
For every row no traceback reaches the user, the user's files (everything the row
built, bundles included) are byte-identical afterwards, and the paths a row names as
"never created" (run folders) do not exist. One small finished study (session fixture)
provides the bundle and the run folder the bundle and artefact rows need.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from radfusion.bundle import load_bundle, write_digest
from radfusion.cli import app
from radfusion.config import StudyConfig
from radfusion.layout import BundleLayout
from radfusion.pipeline import run_study
from radfusion.synth import generate_cohort
from radfusion.utils import current_umask
from tests.conftest import bomb_png_bytes, tiny_config

runner = CliRunner()

# The smallest study that still has every model kind a bundle can hold: radiomics
# (shape + first order only), a 1ch ResNet18, Merged model 1 and the clinical model.
TINY = tiny_config(
    name="bad-inputs",
    selection={"scaler": "zscore"},
    models={"classifiers": ["LR"]},
    deep={"arms": ["1ch"], "epochs": 1, "patience": 1, "gradcam_cases": 0},
    evaluation={"example_cases": 0},
    fusion=None,
    reproducibility=None,
)
PARAMS = (
    "setting: {label: 1, binWidth: 5}\n"
    "imageType: {Original: {}}\n"
    "featureClass: {shape2D: , firstorder: }\n"
)


@dataclass
class Study:
    root: Path
    manifest: Path
    config: Path
    run: Path

    @property
    def bundle(self) -> Path:
        return self.run / "bundle"

    def case(self, i: int = 0) -> pd.Series:
        t = pd.read_csv(self.manifest, dtype=str, keep_default_na=False)
        row = t.iloc[i].copy()
        for col in ("image", "mask"):
            row[col] = str(self.manifest.parent / row[col])
        return row


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    root = tmp_path_factory.mktemp("bad_inputs_study")
    params = root / "radiomics.yaml"
    params.write_text(PARAMS)
    manifest = generate_cohort(root / "cohort", n=32, seed=3, prevalence=0.4, image_shape=(96, 128))
    raw = dict(TINY, data={"manifest": str(manifest)}, output_dir=str(root / "run"))
    raw["radiomics"] = dict(TINY["radiomics"], params=str(params))
    config = root / "study.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = StudyConfig.from_yaml(config)
    # no report stage: nothing here reads it and it is the slowest part
    run_study(cfg, progress=False, only=["radiomics", "deep_1ch", "fusion", "evaluation", "bundle"])
    return Study(root, manifest, config, root / "run")


# --- helpers -------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _write_config(folder: Path, study: Study, name: str = "study.yaml", **override) -> Path:
    raw = yaml.safe_load(study.config.read_text())
    raw["output_dir"] = str(folder / "run")
    for key, value in override.items():
        raw[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def _bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid PNG header declaring side x side pixels (PIL refuses it on open)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bomb_png_bytes(side))
    return path


def _copy_bundle(study: Study, tmp: Path) -> Path:
    return Path(shutil.copytree(study.bundle, tmp / "bundle"))


def _forge(bundle: Path, rel: str, data: bytes) -> None:
    """Replace a bundle file and rewrite its hash in bundle.json, as an attacker would."""
    (bundle / rel).write_bytes(data)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"][rel] = hashlib.sha256(data).hexdigest()
    (bundle / "bundle.json").write_text(json.dumps(meta))
    write_digest(bundle)  # and the digest of bundle.json: only a signature stops this


def _meta_edit(bundle: Path, edit: Callable[[dict], object]) -> None:
    """Edit bundle.json and recompute its digest, as a deliberate attacker would."""
    meta = json.loads((bundle / "bundle.json").read_text())
    new = edit(meta)  # a returned dict or list replaces the whole description
    (bundle / "bundle.json").write_text(json.dumps(new if isinstance(new, dict | list) else meta))
    write_digest(bundle)


def _model_file(bundle: Path, family: str) -> str:
    meta = json.loads((bundle / "bundle.json").read_text())
    return next(m["file"] for m in meta["models"] if m["family"] == family)


def _predict(bundle: Path, study: Study, *extra: str, image=None, mask=None) -> list[str]:
    case = study.case(0)
    return [
        "predict",
        str(bundle),
        "--image",
        str(image or case["image"]),
        "--mask",
        str(mask or case["mask"]),
        *extra,
    ]


def _clinical(study: Study, **override: str) -> list[str]:
    case = study.case(0)
    values = {c: case[c] for c in ("age", "sex", "calcium", "phosphate", "ipth")}
    values.update(override)
    return [x for k, v in values.items() for x in ("--clinical", f"{k}={v}")]


def _ed25519(tmp: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = tmp / f"{name}.pem"
    public = tmp / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _run_copy(study: Study, work: Path) -> Path:
    return Path(shutil.copytree(study.run, work / "run"))


# --- the table -----------------------------------------------------------------------
@dataclass
class Row:
    """A bad input: build(tmp, work, study) -> (argv, paths that must never be created).

    ``tmp`` holds the user's files (checked byte-identical afterwards); ``work`` holds
    radfusion's own folders (run folders the command may rewrite).
    """

    id: str
    build: Callable[[Path, Path, Study], tuple[list[str], list[Path]]]
    code: int
    fragment: str
    check: Callable[[Path, Path, object], None] | None = None
    extra: dict = field(default_factory=dict)


def _config_case(**override):
    def build(tmp, work, study):
        cfg = _write_config(tmp, study, **override)
        return ["run", str(cfg)], [tmp / "run"]

    return build


def _config_text(text: str, *command: str):
    def build(tmp, work, study):
        cfg = tmp / "study.yaml"
        cfg.write_text(text)
        return [*(command or ["run"]), str(cfg)], [tmp / "run", work / "runs"]

    return build


def _manifest_rows(tmp: Path, study: Study, text: str) -> Path:
    path = tmp / "manifest.csv"
    path.write_text(text)
    return path


def _params_config(tmp: Path, study: Study, params: str) -> Path:
    raw = yaml.safe_load(study.config.read_text())
    return _write_config(tmp, study, radiomics=dict(raw["radiomics"], params=params))


def _bad_params_run(tmp, work, study):
    bad = tmp / "params.yaml"
    bad.write_text("setting:\n  binWidth: wide\n")
    return ["run", str(_params_config(tmp, study, str(bad)))], [tmp / "run"]


def _extra_field(tmp, work, study):
    case0, case1 = study.case(0), study.case(1)
    manifest = _manifest_rows(
        tmp,
        study,
        "case_id,image,mask,label\n"
        f"a,{case0['image']},{case0['mask']},0,surplus\n"
        f"b,{case1['image']},{case1['mask']},1\n",
    )
    cfg = _write_config(tmp, study, data={"manifest": str(manifest)})
    return ["run", str(cfg)], [tmp / "run"]


def _bomb(tmp, work, study):
    case0, case1 = study.case(0), study.case(1)
    bomb = _bomb_png(tmp / "bomb.png")
    manifest = _manifest_rows(
        tmp,
        study,
        "case_id,image,mask,label\n"
        f"a,{bomb},{case0['mask']},0\n"
        f"b,{case1['image']},{case1['mask']},1\n",
    )
    return ["validate", str(manifest)], []


def _output_is_config_folder(tmp, work, study):
    cfg = _write_config(tmp, study, name="config.yaml")
    raw = yaml.safe_load(cfg.read_text())
    raw["output_dir"] = "."  # relative: the config's own folder
    cfg.write_text(yaml.safe_dump(raw))
    return ["run", str(cfg)], [tmp / "stages", tmp / "versions.json"]


def _run_dir_is_file(tmp, work, study):
    cfg = _write_config(tmp, study)
    (tmp / "notes.txt").write_text("mine")
    return ["run", str(cfg), "--run-dir", str(tmp / "notes.txt")], []


def _synth_into(files: list[str]):
    def build(tmp, work, study):
        out = tmp / "cohort"
        for rel in files:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text("the user's own file")
        return ["synth", "--out", str(out), "--n", "4"], []

    return build


def _bundle_meta(edit: Callable[[dict], object]):
    def build(tmp, work, study):
        b = _copy_bundle(study, tmp)
        _meta_edit(b, edit)
        return _predict(b, study), []

    return build


def _bundle_byte_changed(tmp, work, study):
    """One byte of bundle.json changed (a model's threshold), nothing else: corruption or
    a careless edit, which the digest catches without a signature."""
    b = _copy_bundle(study, tmp)
    raw = (b / "bundle.json").read_text()
    pos = raw.index('"threshold": 0.') + len('"threshold": 0.')
    digit = "9" if raw[pos] != "9" else "1"
    (b / "bundle.json").write_text(raw[:pos] + digit + raw[pos + 1 :])
    return _predict(b, study, *_clinical(study)), []


def _bundle_without_digest(tmp, work, study):
    b = _copy_bundle(study, tmp)
    BundleLayout(b).digest.unlink()
    return _predict(b, study, *_clinical(study)), []


def _set_first_file(value: str):
    def edit(meta):
        meta["models"][0]["file"] = value
        meta["models"][0].pop("network", None)

    return edit


def _forged(rel_of: Callable[[Path], str], data_of: Callable[[Path, str], bytes]):
    def build(tmp, work, study):
        b = _copy_bundle(study, tmp)
        rel = rel_of(b)
        _forge(b, rel, data_of(b, rel))
        return _predict(b, study, *_clinical(study)), []

    return build


def _bundle_config_reaching_out(tmp, work, study):
    b = _copy_bundle(study, tmp)
    raw = yaml.safe_load((b / "config.yaml").read_text())
    raw["radiomics"]["dask_scheduler"] = "tcp://10.255.255.1:8786"  # unroutable
    raw["radiomics"]["cache_dir"] = str(tmp / "attacker_cache")
    raw["output_dir"] = str(tmp / "attacker_out")
    _forge(b, "config.yaml", yaml.safe_dump(raw).encode())
    return _predict(b, study, *_clinical(study)), [tmp / "attacker_cache", tmp / "attacker_out"]


def _check_bundle_settings_ignored(tmp, work, res):
    cfg = load_bundle(tmp / "bundle").config
    assert cfg.radiomics.dask_scheduler is None and cfg.radiomics.cache_dir is None


def _signed(kind: str, verify_with: str, tamper: bool = False):
    def build(tmp, work, study):
        b = _copy_bundle(study, tmp)
        if kind == "hmac":
            secret = tmp / "secret.key"
            secret.write_bytes(b"0123456789abcdef0123456789abcdef")
            sign_key, trust = secret, secret
        else:
            sign_key, trust = _ed25519(tmp, "author")
        if kind != "none":
            res = runner.invoke(app, ["sign", str(b), "--key", str(sign_key)])
            assert res.exit_code == 0, res.output
        if verify_with == "other-ed25519":
            _, trust = _ed25519(tmp, "stranger")
        elif verify_with == "hmac":
            trust = tmp / "other.key"
            trust.write_bytes(b"another secret of enough length!")
        if tamper:  # rewrite a hash, as someone editing the bundle would
            _meta_edit(b, lambda m: m["files"].update({"config.yaml": "0" * 64}))
        return _predict(b, study, *_clinical(study), "--trusted-key", str(trust)), []

    return build


def _predict_case(mask_of: Callable[[Path, Study], Path] | None = None, *extra, image_of=None):
    def build(tmp, work, study):
        image = image_of(tmp, study) if image_of else None
        mask = mask_of(tmp, study) if mask_of else None
        return _predict(study.bundle, study, *extra, image=image, mask=mask), []

    return build


def _roi(tmp: Path, study: Study, box: tuple[slice, slice] | None) -> Path:
    m = np.zeros((96, 128), dtype=np.uint8)
    if box is None:
        m[:] = 255
    else:
        m[box] = 255
    return _png(tmp / "roi.png", m)


def _tiny_image(tmp: Path, study: Study) -> Path:
    rng = np.random.default_rng(0)
    return _png(tmp / "small.png", rng.integers(40, 200, (24, 24)))


def _tiny_image_mask(tmp: Path, study: Study) -> Path:
    m = np.zeros((24, 24), dtype=np.uint8)
    m[6:18, 6:18] = 255
    return _png(tmp / "small_roi.png", m)


def _bracket_path(tmp: Path, study: Study) -> Path:
    return tmp / "a[" / "y]" / "missing.png"  # the path text contains "[/y]"


def _damaged_run(target: str, command: str):
    def build(tmp, work, study):
        run = _run_copy(study, work)
        f = run / target
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        cfg = _write_config(tmp, study)
        if command == "report":
            return ["report", str(run)], []
        return [command, str(cfg), "--run-dir", str(run)], []

    return build


def _check_features_readable(tmp, work, res):
    pd.read_parquet(work / "run" / "radiomics" / "features.parquet")
    assert "stage radiomics: running" in res.output


def _stray_temps(tmp, work, study):
    run = _run_copy(study, work)
    (run / ".cases.csv.k1ll3d.tmp").write_text("half")
    (run / "radiomics" / ".features.parquet.k1ll3d.tmp").write_bytes(b"PAR1")
    (run / ".bundle-k1ll3d").mkdir()
    (run / ".bundle-k1ll3d" / "bundle.json").write_text("{")
    cfg = _write_config(tmp, study)
    return ["radiomics", str(cfg), "--run-dir", str(run)], []


def _check_no_temps(tmp, work, res):
    run = work / "run"
    assert not list(run.rglob("*.tmp")) and not list(run.glob(".bundle-*"))


def _json_warnings(tmp, work, res):
    payload = json.loads(res.stdout)
    (case,) = payload["cases"]
    assert "tiny_roi" in {w["code"] for w in case["warnings"]}
    assert {p["family"] for p in case["predictions"]} >= {"radiomics", "1ch", "clinical"}


def _json_out_of_range(tmp, work, res):
    (case,) = json.loads(res.stdout)["cases"]
    (w,) = [w for w in case["warnings"] if w["code"] == "out_of_range"]
    assert "'age' value 110 is outside the training range" in w["message"]


def _plausible_age(tmp, work, study):
    """data.clinical.plausible: an impossible age is a data-entry error at validate."""
    raw = yaml.safe_load(study.config.read_text())
    data = dict(raw["data"])
    data["clinical"] = {
        "numeric": ["age", "calcium", "phosphate", "ipth"],
        "categorical": ["sex"],
        "plausible": {"age": [0, 120]},
    }
    cfg = _write_config(tmp, study, data=data)
    rows = pd.read_csv(study.manifest, dtype=str, keep_default_na=False)
    rows.loc[0, "age"] = "-5"
    for col in ("image", "mask", "mask_reader2"):
        rows[col] = [str(study.manifest.parent / v) if v else v for v in rows[col]]
    rows.to_csv(tmp / "manifest.csv", index=False)
    return ["validate", str(tmp / "manifest.csv"), "--config", str(cfg)], []


def _case_id_printed(tmp, work, res):
    assert "[/x]" in res.output and "MarkupError" not in res.output


ROWS = [
    # --- configuration: named error, exit 2, no run folder --------------------------
    Row(
        "config path is a folder", lambda t, w, s: (["run", str(t)], [t / "run"]), 2, "is a folder"
    ),
    Row("config YAML is a scalar", _config_text("42\n"), 2, "must hold a mapping"),
    Row("config YAML is a list", _config_text("- a\n- b\n"), 2, "not a list"),
    Row("config check, seed -1", _config_text("seed: -1\n", "config", "check"), 2, "seed"),
    Row("seed -1", _config_case(seed=-1), 2, "greater than or equal to 0"),
    Row("pydantic detail kept", _config_case(models={"cv": "ten"}), 2, "input_value='ten'"),
    Row("markup in config value", _config_case(split={"method": "[/bold]"}), 2, "'[/bold]'"),
    Row(
        "missing manifest",
        lambda t, w, s: (
            ["run", str(_write_config(t, s, data={"manifest": str(t / "nope.csv")}))],
            [t / "run"],
        ),
        2,
        "manifest not found",
    ),
    Row(
        "manifest is a folder",
        lambda t, w, s: (
            ["run", str(_write_config(t, s, data={"manifest": str(t)}))],
            [t / "run"],
        ),
        2,
        "is a folder",
    ),
    Row(
        "params: demo in config check",
        lambda t, w, s: (["config", "check", str(_params_config(t, s, "demo"))], []),
        2,
        "radiomics.params 'demo' is not a shipped PyRadiomics parameter file",
    ),
    Row(
        "params: demo refused before the run folder",
        lambda t, w, s: (["run", str(_params_config(t, s, "demo"))], [t / "run"]),
        2,
        "choose one of 'paper'",
    ),
    Row(
        "params: bad schema refused before the run folder",
        _bad_params_run,
        2,
        "PyRadiomics rejected the parameter file",
    ),
    Row(
        "params: empty",
        lambda t, w, s: (["config", "check", str(_params_config(t, s, ""))], []),
        2,
        "radiomics.params is empty",
    ),
    Row("extra field in first data row", _extra_field, 2, "has 5 fields but the header has 4"),
    Row("decompression bomb image", _bomb, 2, "declares more pixels"),
    Row("output_dir is the config folder", _output_is_config_folder, 2, "did not write"),
    Row("run folder is a file", _run_dir_is_file, 2, "is a file"),
    # --- synth never overwrites ------------------------------------------------------
    Row("synth into a cohort", _synth_into(["manifest.csv"]), 2, "--overwrite"),
    Row("synth over case images", _synth_into(["images/case_0001.png"]), 2, "already holds"),
    # --- bundles are untrusted input ---------------------------------------------------
    Row(
        "bundle.json one byte changed",
        _bundle_byte_changed,
        2,
        "bundle.json does not match its recorded SHA-256",
    ),
    Row("bundle.json digest missing", _bundle_without_digest, 2, "--from bundle"),
    Row("bundle.json is []", _bundle_meta(lambda m: []), 2, "holds a JSON list"),
    Row("bundle.json only format", _bundle_meta(lambda m: {"format": m["format"]}), 2, "'files'"),
    Row(
        "bundle model named as another",
        _bundle_meta(lambda m: m["models"][0].update({"model": "Radiomics-Unknown"})),
        2,
        "is not the name of",
    ),
    Row("bundle path absolute", _bundle_meta(_set_first_file("/etc/passwd")), 2, "points outside"),
    Row("bundle path with ..", _bundle_meta(_set_first_file("../x.skops")), 2, "points outside"),
    Row(
        "bundle file without hash",
        _bundle_meta(lambda m: m["files"].pop("config.yaml")),
        2,
        "no recorded SHA-256",
    ),
    Row(
        "bundle file listed outside",
        _bundle_meta(lambda m: m["files"].update({"../../elsewhere.txt": "0" * 64})),
        2,
        "points outside the bundle folder",
    ),
    Row(
        "network is not safetensors",
        _forged(lambda b: "networks/1ch/network.safetensors", lambda b, r: b"\x00" * 64),
        2,
        "network.safetensors is not a readable safetensors file",
    ),
    Row(
        "truncated skops model",
        _forged(
            lambda b: _model_file(b, "radiomics"),
            lambda b, r: (b / r).read_bytes()[: (b / r).stat().st_size // 2],
        ),
        2,
        "is not a valid skops model file",
    ),
    Row(
        "bundle config names a scheduler and folders",
        _bundle_config_reaching_out,
        0,
        "Clinical+imaging",
        check=_check_bundle_settings_ignored,
    ),
    Row("trusted key, unsigned bundle", _signed("none", "hmac"), 2, "is not signed"),
    Row("HMAC signature, edited bundle", _signed("hmac", "same", True), 2, "does not match"),
    Row("Ed25519 signature, other key", _signed("ed25519", "other-ed25519"), 2, "does not match"),
    Row("HMAC signature, Ed25519 key", _signed("hmac", "other-ed25519"), 2, "hmac-sha256"),
    Row("Ed25519 signature verified", _signed("ed25519", "same"), 0, "Clinical+imaging"),
    # --- predict: the checks of validate, warnings shown -------------------------------
    Row(
        "tiny ROI",
        _predict_case(lambda t, s: _roi(t, s, (slice(40, 43), slice(60, 63)))),
        0,
        "tiny_roi",
    ),
    Row(
        "tiny ROI in --json",
        _predict_case(lambda t, s: _roi(t, s, (slice(40, 43), slice(60, 63))), "--json"),
        0,
        '"tiny_roi"',
        check=_json_warnings,
    ),
    Row(
        "tiny ROI with --strict",
        _predict_case(lambda t, s: _roi(t, s, (slice(40, 43), slice(60, 63))), "--strict"),
        2,
        "--strict",
    ),
    Row("tiny image", _predict_case(_tiny_image_mask, image_of=_tiny_image), 0, "tiny_image"),
    Row(
        "ROI covers the image", _predict_case(lambda t, s: _roi(t, s, None)), 0, "roi_covers_image"
    ),
    Row("missing clinical values", _predict_case(), 0, "'calcium' is missing"),
    Row(
        "unseen category",
        lambda t, w, s: (_predict(s.bundle, s, *_clinical(s, sex="X")), []),
        0,
        "unseen_category",
    ),
    Row(
        "unknown clinical key",
        lambda t, w, s: (_predict(s.bundle, s, "--clinical", "weight=80"), []),
        2,
        "unknown clinical key(s) weight",
    ),
    Row(
        "age outside training",
        lambda t, w, s: (_predict(s.bundle, s, *_clinical(s, age="110"), "--json"), []),
        0,
        "out_of_range",
        check=_json_out_of_range,
    ),
    Row(
        "age outside training with --strict",
        lambda t, w, s: (_predict(s.bundle, s, *_clinical(s, age="110"), "--strict"), []),
        2,
        "[out_of_range] case new_case: 'age' value 110 is outside the training range",
    ),
    Row(
        "negative age (preset's plausible range)",
        lambda t, w, s: (_predict(s.bundle, s, *_clinical(s, age="-5")), []),
        2,
        "[implausible_value] case new_case: 'age' value -5 is outside its plausible range",
    ),
    Row(
        "absurd age (preset's plausible range)",
        lambda t, w, s: (_predict(s.bundle, s, *_clinical(s, age="1e300")), []),
        2,
        "[implausible_value]",
    ),
    Row("implausible age in validate", _plausible_age, 2, "[implausible_value]"),
    Row(
        "plausible range upside down",
        lambda t, w, s: (
            [
                "config",
                "check",
                str(_write_config(t, s, data={"clinical": {"plausible": {"age": [120, 0]}}})),
            ],
            [],
        ),
        2,
        "must be [low, high] with low < high",
    ),
    Row(
        "--manifest with --image",
        lambda t, w, s: (
            ["predict", str(s.bundle), "--manifest", str(s.manifest), "--image", "x.png"],
            [],
        ),
        2,
        "give either --manifest or --image and --mask",
    ),
    Row(
        "markup in case id",
        lambda t, w, s: (_predict(s.bundle, s, *_clinical(s), "--case-id", "[/x]"), []),
        0,
        "[/x]",
        check=_case_id_printed,
    ),
    Row(
        "markup in a path",
        _predict_case(_bracket_path),
        2,
        "a[/y]/missing.png",
    ),
    # --- damaged run artefacts ---------------------------------------------------------
    Row(
        "truncated features.parquet is recomputed",
        _damaged_run("radiomics/features.parquet", "radiomics"),
        0,
        "stage radiomics: running",
        check=_check_features_readable,
    ),
    Row(
        "truncated features.parquet named by report",
        _damaged_run("radiomics/features.parquet", "report"),
        2,
        "--from radiomics",
    ),
    Row("stray temporary files removed", _stray_temps, 0, "stage radiomics", check=_check_no_temps),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, study: Study, tmp_path: Path, monkeypatch) -> None:
    user, work = tmp_path / "user", tmp_path / "work"
    user.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)  # anything written relative to the cwd lands in `work`
    argv, never = row.build(user, work, study)
    before = _snapshot(user)
    res = runner.invoke(app, argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert res.exit_code == row.code, res.output
    assert row.fragment in res.output, res.output
    if row.code == 2:
        errors = [ln for ln in res.output.splitlines() if ln.startswith("error")]
        assert errors, f"no 'error' line: {res.output}"
    after = _snapshot(user)
    assert {k: after.get(k) for k in before} == before, "a user file was changed or deleted"
    for p in never:
        assert not p.exists(), f"{p} was created"
    if row.check:
        row.check(user, work, res)


# --- checks outside the command table ----------------------------------------------------
def test_every_file_honours_the_umask(study: Study) -> None:
    mask = current_umask()
    for p in [study.run, *study.run.rglob("*")]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        expected = (0o777 if p.is_dir() else 0o666) & ~mask
        if p.is_file():
            assert mode == expected, f"{p} is {oct(mode)}, umask allows {oct(expected)}"
        else:  # folders: at least what the umask allows (mkdir honours it)
            assert mode & expected == expected, f"{p} is {oct(mode)}"


def test_relative_output_dir_is_relative_to_the_config(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "study.yaml").write_text("output_dir: runs/a\ndata: {manifest: cohort.csv}\n")
    monkeypatch.chdir(tmp_path)
    cfg = StudyConfig.from_yaml(folder / "study.yaml")
    assert cfg.output_dir == (folder / "runs" / "a").resolve()
    assert cfg.data.manifest == (folder / "cohort.csv").resolve()


def test_single_class_validation_split_is_a_console_warning(study, tmp_path, caplog) -> None:
    t = pd.read_csv(study.manifest, dtype=str, keep_default_na=False)
    t["split"] = "train"
    val0 = t.index[t["label"] == "0"][:3]
    test = [*t.index[t["label"] == "0"][3:5], *t.index[t["label"] == "1"][:2]]
    t.loc[val0, "split"] = "val"
    t.loc[test, "split"] = "test"
    manifest = study.manifest.parent / "split_manifest.csv"
    t.to_csv(manifest, index=False)
    cfg = StudyConfig.from_yaml(study.config)
    cfg.data.manifest = manifest
    cfg.split.method = "column"
    with caplog.at_level(logging.WARNING, logger="radfusion"):
        run_study(cfg, tmp_path / "run", until="split", progress=False)
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("val split holds only class 0" in m for m in msgs), msgs
    assert not any("test split holds only" in m for m in msgs)


def test_damaged_network_input_cache_is_recomputed(study, tmp_path, caplog) -> None:
    from radfusion.deep.inputs import InputCache, InputSpec

    case = study.case(0)
    spec = InputSpec(arm="1ch", image_size=32)
    cache = InputCache(tmp_path / "cache")
    fresh = np.array(cache.load(Path(case["image"]), None, spec))
    (npy,) = (tmp_path / "cache").glob("*.npy")
    npy.write_bytes(npy.read_bytes()[:100])  # truncated, as by a kill -9 or full disk
    with caplog.at_level(logging.WARNING):
        again = np.array(InputCache(tmp_path / "cache").load(Path(case["image"]), None, spec))
    np.testing.assert_array_equal(fresh, again)
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_damaged_checkpoint_trains_afresh(tmp_path, caplog) -> None:
    from radfusion.deep.train import _read_checkpoint

    ck = tmp_path / "checkpoint.pt"
    ck.write_bytes(b"PK\x03\x04 truncated zip")
    with caplog.at_level(logging.WARNING):
        assert _read_checkpoint(ck) is None
    assert not ck.exists()
    assert any("training this arm from the start" in r.getMessage() for r in caplog.records)


def test_stage_markers_record_output_hashes(study) -> None:
    marker = json.loads((study.run / "stages" / "radiomics.json").read_text())
    assert "radiomics/features.parquet" in marker["outputs"]
    assert not any("cache" in rel.split("/") for rel in marker["outputs"])


def test_missing_categorical_value_is_imputed_not_unknown(study) -> None:
    import warnings

    from radfusion.bundle import predict_bundle
    from radfusion.predict import single_case_cohort

    b = load_bundle(study.bundle)
    case = study.case(0)
    values = {c: case[c] for c in ("age", "calcium", "phosphate", "ipth")}  # sex missing
    cohort = single_case_cohort(b, image=case["image"], mask=case["mask"], clinical=values)
    assert np.isnan(cohort.case(0).clinical["sex"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # sklearn: "Found unknown categories"
        preds = predict_bundle(b, cohort.cases())
    assert preds["probability"].between(0, 1).all()


def test_predict_table_keeps_scores_visible_at_80_columns(study: Study, monkeypatch) -> None:
    """Issue 26: with a warning, the table squeezed P, threshold and class to nothing."""
    from radfusion import cli

    argv = _predict(study.bundle, study, *_clinical(study, age="110"))
    payload = json.loads(runner.invoke(app, [*argv, "--json"]).stdout)
    monkeypatch.setattr(cli.out, "width", 80)
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert "P(APT/PC)" in res.output and "threshold" in res.output
    assert "…" not in res.output.split("* the study's chosen model")[0]
    for p in payload["cases"][0]["predictions"]:
        assert f"{p['probability']:.3f}" in res.output
    assert "[out_of_range] case new_case" in res.output


def test_a_case_error_in_run_leaves_only_the_documented_files(study: Study, tmp_path) -> None:
    """Issue 26 / README: a case error found by `run` exits 2 leaving only the config as
    run, versions, the validation report, the log and stage bookkeeping (no stage done)."""
    rows = pd.read_csv(study.manifest, dtype=str, keep_default_na=False)
    for col in ("image", "mask", "mask_reader2"):
        rows[col] = [str(study.manifest.parent / v) if v else v for v in rows[col]]
    rows.loc[1, "image"] = str(tmp_path / "nope.png")
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    raw = yaml.safe_load(study.config.read_text())
    cfg = _write_config(
        tmp_path, study, data=dict(raw["data"], manifest=str(tmp_path / "manifest.csv"))
    )
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2 and "image file not found" in res.output, res.output
    run = tmp_path / "run"
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert left == [
        "config.yaml",
        "logs/run.log",
        "stages/data_files.json",
        "stages/run.lock",
        "validation.json",
        "versions.json",
    ]
    assert (run / "stages" / "run.lock").read_text() == ""  # released
    assert "Traceback" in (run / "logs" / "run.log").read_text()  # details for -v users
