"""Training, features, resume and Grad-CAM of the deep arms on a tiny synthetic cohort.

Everything runs on the CPU with ResNet-18 at 32 px, a few epochs: seconds, not minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from radfusion.config import DataConfig, DeepConfig, StudyConfig
from radfusion.data import Cohort, load_cohort
from radfusion.deep import (
    DeepArmResult,
    build_resnet,
    gradcam_map,
    load_network_spec,
    load_trained_network,
    predict_cases,
    read_deep_features,
    run_deep_arm,
)
from radfusion.deep.inputs import DeepDataset, InputRow
from radfusion.deep.train import epoch_order
from radfusion.errors import RadfusionError
from radfusion.preprocessing import plan_augmentation
from tests.conftest import make_cohort

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4


def load_study(root: Path, **deep: object) -> tuple[Cohort, pd.Series, StudyConfig, pd.DataFrame]:
    """Cohort, 20/6/6 split, config and augmentation plan of the test study under ``root``."""
    cohort = load_cohort(root / "manifest.csv", DataConfig())
    ids = cohort.case_ids
    split = pd.Series(["train"] * 20 + ["val"] * 6 + ["test"] * 6, index=ids)
    settings = dict(
        depth=18,
        image_size=32,
        epochs=EPOCHS,
        batch_size=8,
        lr=1e-3,
        patience=10,
        device="cpu",
        gradcam_cases=2,
    )
    settings.update(deep)
    cfg = StudyConfig(seed=3, deep=DeepConfig(**settings))
    table = pd.DataFrame({"case_id": ids, "label": cohort.labels, "split": split.to_numpy()})
    plan = plan_augmentation(table[:20], cfg.augment.model_copy(update={"factor": 2}), seed=3)
    return cohort, split, cfg, plan


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Two torch threads on a busy 2-core machine spin against each other (3-4x slower);
    # one thread also keeps in-process and subprocess runs on identical kernels.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def study_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deep_cohort")
    make_cohort(root, n=32, shape=(64, 80), reader2=True)
    return root


@pytest.fixture(scope="module")
def run_a(study_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DeepArmResult:
    cohort, split, cfg, plan = load_study(study_root)
    out = tmp_path_factory.mktemp("run_a")
    return run_deep_arm(cohort, split, cfg, "1ch", out, plan, progress=False)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "network.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_training_learns_the_easy_task(run_a: DeepArmResult) -> None:
    h = run_a.history
    assert list(h["epoch"]) == list(range(1, EPOCHS + 1))
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    assert h["val_auc"].max() >= 0.9
    assert run_a.selection == "val_auc"
    assert h.loc[h["epoch"] == run_a.best_epoch, "val_auc"].item() == h["val_auc"].max()
    test = run_a.predictions[run_a.predictions["split"] == "test"]
    p = test.groupby("label")["probability"].mean()
    assert p[1] > p[0]


def test_arm_folder_holds_every_output(run_a: DeepArmResult) -> None:
    out = run_a.out_dir
    for name in (
        "network.safetensors",
        "network.json",
        "checkpoint.pt",
        "history.csv",
        "history.png",
        "features.parquet",
    ):
        assert (out / name).is_file(), name
    # the probabilities are returned, and written once, by the study (models/<arm>/)
    assert not (out / "predictions.parquet").exists()
    assert not (out / "features_reader2.parquet").exists()  # 1ch: no ROI in the input
    assert len(run_a.gradcam_paths) == 2 and all(p.stat().st_size > 0 for p in run_a.gradcam_paths)
    feats, meta = read_deep_features(out / "features.parquet")
    # 32 cases + 10 planned copies, 512 ResNet-18 features each.
    assert feats.shape == (42, 512) and list(feats.columns[:2]) == ["dl1ch_0000", "dl1ch_0001"]
    assert feats.equals(run_a.features) and np.isfinite(feats.to_numpy()).all()
    copies = meta[meta.index != meta["source_case_id"]]
    assert len(copies) == 10 and set(copies["split"]) == {"train"}
    pred = run_a.predictions
    assert list(pred.columns) == ["case_id", "split", "label", "model", "probability"]
    assert len(pred) == 32 and set(pred["model"]) == {"1ch_ResNet18"}
    hist = pd.read_csv(out / "history.csv")
    assert {"train_auc", "val_auc", "train_loss", "val_loss", "images_per_s"} <= set(hist)
    assert load_network_spec(out).feature_dim == 512


def test_same_seed_gives_identical_weights(
    run_a: DeepArmResult, study_root: Path, tmp_path: Path
) -> None:
    cohort, split, cfg, plan = load_study(study_root)
    run_b = run_deep_arm(cohort, split, cfg, "1ch", tmp_path / "b", plan, progress=False)
    assert_same_weights(run_a.out_dir, run_b.out_dir)
    pd.testing.assert_frame_equal(
        run_a.history.drop(columns=["seconds", "images_per_s"]),
        run_b.history.drop(columns=["seconds", "images_per_s"]),
    )


def test_resume_after_kill_9_matches_an_uninterrupted_run(
    run_a: DeepArmResult, study_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        torch.set_num_threads(1)
        from pathlib import Path
        from tests.test_deep import load_study
        from radfusion.deep import run_deep_arm

        def die(record):
            if record.epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        cohort, split, cfg, plan = load_study(Path({str(study_root)!r}))
        run_deep_arm(cohort, split, cfg, "1ch", Path({str(out)!r}), plan, progress=False,
                     on_epoch_end=die)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "checkpoint.pt").is_file()
    assert not (out / "network.safetensors").exists()  # nothing that looks finished
    assert not list(out.glob(".*.tmp"))

    cohort, split, cfg, plan = load_study(study_root)
    resumed = run_deep_arm(cohort, split, cfg, "1ch", out, plan, progress=False)
    assert len(resumed.history) == EPOCHS
    assert load_network_spec(out) == run_a.spec
    assert_same_weights(run_a.out_dir, out)
    assert resumed.predictions["probability"].equals(run_a.predictions["probability"])


def test_finished_run_is_reused_and_other_settings_are_refused(
    run_a: DeepArmResult, study_root: Path
) -> None:
    cohort, split, cfg, plan = load_study(study_root)
    again = run_deep_arm(cohort, split, cfg, "1ch", run_a.out_dir, plan, progress=False)
    assert again.history.equals(run_a.history)  # no epoch retrained
    assert again.predictions.equals(run_a.predictions)
    cohort, split, cfg, plan = load_study(study_root, lr=5e-4)
    with pytest.raises(RadfusionError, match="other data or settings"):
        run_deep_arm(cohort, split, cfg, "1ch", run_a.out_dir, plan, progress=False)


def test_trained_network_scores_new_images_like_the_run(
    run_a: DeepArmResult, study_root: Path
) -> None:
    cohort, *_ = load_study(study_root)
    model = load_trained_network(run_a.out_dir)
    assert not model.training
    scored = predict_cases(run_a.out_dir, cohort.subset(cohort.case_ids[-6:]), model=model)
    ref = run_a.predictions.set_index("case_id").loc[scored.index, "probability"]
    np.testing.assert_allclose(scored["probability"], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        scored.drop(columns="probability"), run_a.features.loc[scored.index], rtol=1e-5, atol=1e-5
    )


def test_2ch_arm_with_reader2_and_no_validation(study_root: Path, tmp_path: Path) -> None:
    cohort, split, cfg, _ = load_study(study_root, epochs=2, gradcam_cases=1)
    split = split.replace({"val": "train"})
    res = run_deep_arm(cohort, split, cfg, "2ch", tmp_path / "2ch", None, progress=False)
    assert res.selection == "last_epoch" and res.best_epoch == 2
    assert res.history["val_auc"].isna().all()
    assert res.features.shape == (32, 512) and res.features.columns[0] == "dl2ch_0000"
    r2 = res.features_reader2
    assert r2 is not None and r2.shape == (32, 512)
    # A second delineation moves the features, but only a little.
    diff = (r2 - res.features.loc[r2.index]).abs().to_numpy()
    assert diff.max() > 0
    assert np.median(diff) < np.median(res.features.abs().to_numpy())
    assert (tmp_path / "2ch" / "features_reader2.parquet").is_file()
    assert load_trained_network(tmp_path / "2ch").conv1.weight.shape[1] == 2


def test_gradcam_map_has_the_input_size_and_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = build_resnet(18, 2, 1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 64, 64)
    heat = gradcam_map(model, x)
    assert heat.shape == (64, 64)
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0
    batch = gradcam_map(model, torch.randn(3, 2, 64, 64))
    assert batch.shape == (3, 64, 64)
    assert not model.layer4._forward_hooks and not model.layer4._backward_hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_gradcam_map_frees_its_network_copy_at_once() -> None:
    """The serve leak of issue 26: MONAI's hooks kept every call's network copy (with its
    gradients and activations) alive through the autograd graph, out of the collector's
    reach; ``/api/explain`` grew by ~175 MB per request."""
    import gc

    model = build_resnet(18, 2, 1).eval()
    resnet = type(model)

    def alive() -> int:
        return sum(isinstance(o, resnet) for o in gc.get_objects())

    gc.collect()
    before = alive()
    was_enabled = gc.isenabled()
    gc.disable()  # freed by reference counting, not by a later collection
    try:
        for _ in range(3):
            gradcam_map(model, torch.randn(2, 32, 32))
        assert alive() == before
    finally:
        if was_enabled:
            gc.enable()


def test_cuda_request_without_gpu_is_a_config_error(study_root: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from radfusion.errors import ConfigError

    cohort, split, cfg, _ = load_study(study_root, device="cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_deep_arm(cohort, split, cfg, "1ch", tmp_path / "x", progress=False)


def test_epoch_order_is_a_pure_function_of_seed_and_epoch() -> None:
    labels = np.array([0] * 30 + [1] * 5)
    a = epoch_order(labels, epoch=3, seed=1, balanced=False, batch_size=8)
    assert a == epoch_order(labels, epoch=3, seed=1, balanced=False, batch_size=8)
    assert a != epoch_order(labels, epoch=4, seed=1, balanced=False, batch_size=8)
    assert sorted(a) == list(range(35))  # 35 = 4 x 8 + 3: no singleton batch
    b = epoch_order(labels, epoch=0, seed=1, balanced=False, batch_size=17)
    assert len(b) == 34  # 35 = 2 x 17 + 1: the lone last sample is dropped
    drawn = np.concatenate(
        [labels[epoch_order(labels, e, 1, balanced=True, batch_size=8)] for e in range(40)]
    )
    assert abs(drawn.mean() - 0.5) < 0.05  # balanced sampler: classes drawn equally


def test_early_stopping_and_selection_follow_validation_auc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import radfusion.deep.train as train_mod

    scripted = iter([(0.6, 0.9), (0.8, 0.7), (0.8, 0.6), (0.7, 0.5), (0.75, 0.4), (0.9, 0.3)])

    def fake_epoch(model, train_set, val_set, cfg, *, epoch, **_kw):
        auc, loss = next(scripted)
        with torch.no_grad():
            model.fc.bias.fill_(float(epoch))  # marks which epoch's weights are kept
        return train_mod.EpochRecord(epoch + 1, 1.0, 0.5, loss, auc, cfg.lr, 0.1, 10.0, False)

    monkeypatch.setattr(train_mod, "_train_one_epoch", fake_epoch)
    arrays = {c: np.zeros((1, 32, 32), np.float16) for c in "abcd"}
    rows = [InputRow(c, c, i % 2, "train") for i, c in enumerate("abcd")]
    ds = DeepDataset(arrays, rows)
    cfg = DeepConfig(depth=18, image_size=32, epochs=6, patience=2, device="cpu")
    res = train_mod.train_network(
        build_resnet(18, 1, 1),
        ds,
        ds,
        cfg,
        seed=0,
        device=torch.device("cpu"),
        checkpoint_path=tmp_path / "ck.pt",
        progress=False,
    )
    # AUC 0.8 at epochs 2 and 3: the tie goes to the lower loss (epoch 3); epochs 4, 5
    # bring no improvement, so training stops before epoch 6 (AUC 0.9) is ever run.
    assert res.best_epoch == 3 and res.best_score == 0.8
    assert res.stopped_early and len(res.history) == 5
    assert res.history["best"].tolist() == [True, True, True, False, False]
    assert res.model.fc.bias.item() == 2.0


def test_deterministic_block_removes_the_cublas_setting_it_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from radfusion.deep.train import reproducible

    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with reproducible(True, cuda):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own value stays
    with reproducible(True, cuda):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_resumed_training_leaves_the_callers_torch_rng_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import radfusion.deep.train as train_mod

    def fake_epoch(model, train_set, val_set, cfg, *, epoch, **_kw):
        torch.rand(3)  # training draws from the global RNG
        return train_mod.EpochRecord(epoch + 1, 1.0, 0.5, 0.5, 0.5, cfg.lr, 0.1, 10.0, False)

    monkeypatch.setattr(train_mod, "_train_one_epoch", fake_epoch)
    arrays = {c: np.zeros((1, 32, 32), np.float16) for c in "abcd"}
    ds = DeepDataset(arrays, [InputRow(c, c, i % 2, "train") for i, c in enumerate("abcd")])
    cfg = DeepConfig(depth=18, image_size=32, epochs=2, patience=5, device="cpu")

    def train(model: torch.nn.Module, epochs: int) -> None:
        train_mod.train_network(
            model,
            ds,
            ds,
            cfg.model_copy(update={"epochs": epochs}),
            seed=0,
            device=torch.device("cpu"),
            checkpoint_path=tmp_path / "ck.pt",
            progress=False,
        )

    for epochs in (1, 2, 2):  # fresh, resumed to the end, resumed when finished
        model = build_resnet(18, 1, 1)
        torch.manual_seed(123)
        before = torch.get_rng_state()
        train(model, epochs)
        assert torch.equal(torch.get_rng_state(), before), epochs
