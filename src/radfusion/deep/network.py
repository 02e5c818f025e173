"""A trained arm's network as files: its description, its weights, and scoring with it.

``network.json`` (:class:`NetworkSpec` plus the training record) and
``network.safetensors`` (the weights; safetensors, so loading never runs code) are what
:func:`radfusion.deep.arm.run_deep_arm` leaves and what a bundle ships.
:func:`load_trained_network` and :func:`predict_cases` score new images with them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from torch import nn

from radfusion.data import Case, Cohort
from radfusion.deep.features import features_frame, infer, resolve_device
from radfusion.deep.inputs import DeepDataset, InputCache, InputRow, InputSpec, build_inputs
from radfusion.deep.networks import build_resnet, feature_dim
from radfusion.errors import RadfusionError
from radfusion.families import ModelId
from radfusion.layout import ArmLayout
from radfusion.utils import atomic_path

WEIGHTS_FILE = ArmLayout.WEIGHTS
SPEC_FILE = ArmLayout.SPEC
SPEC_FORMAT = "radfusion-deep-network/1"


@dataclass(frozen=True)
class NetworkSpec:
    """What is needed to rebuild and feed a trained network.

    Attributes
    ----------
    arm : {"1ch", "2ch"}
    depth : int
    input : InputSpec
        Input geometry and normalisation.
    """

    arm: str
    depth: int
    input: InputSpec

    @property
    def in_channels(self) -> int:
        return self.input.in_channels

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.depth)

    @property
    def model_name(self) -> str:
        return ModelId.network(self.arm, self.depth).name

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "depth": self.depth,
            "model_name": self.model_name,
            "in_channels": self.in_channels,
            "num_classes": 1,
            "output": "sigmoid(logit) = probability of label 1 (APT/PC, malignant)",
            "feature_dim": self.feature_dim,
            "feature_layer": "global average pool (flattened), before fc",
            "architecture": "MONAI ResNet, 2D, canonical He et al. 2016 (conv1 7x7/2, "
            "max-pool, projection shortcuts without bias)",
            "input": self.input.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSpec:
        return cls(arm=d["arm"], depth=int(d["depth"]), input=InputSpec.from_dict(d["input"]))


def save_weights(model: nn.Module, path: Path, name: str) -> None:
    """Write a network's weights as safetensors (atomically, byte-stable)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        # One metadata entry: safetensors writes its metadata map in hash order, which
        # changes from process to process, so two entries would make identical weights
        # differ in their bytes.
        save_file(state, str(tmp), metadata={"format": f"{SPEC_FORMAT}; {name}"})


def monai_version() -> str:
    import monai

    return str(monai.__version__)


def load_network_spec(model_dir: str | Path) -> NetworkSpec:
    """The :class:`NetworkSpec` of a trained arm folder (its ``network.json``)."""
    path = ArmLayout(Path(model_dir)).spec
    if not path.is_file():
        raise RadfusionError(f"{model_dir} holds no trained network ({SPEC_FILE} missing)")
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RadfusionError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != SPEC_FORMAT:
        raise RadfusionError(f"{path} is not a radfusion network description ({SPEC_FORMAT})")
    try:
        return NetworkSpec.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise RadfusionError(f"{path} is not a valid network description: {exc}") from None


def load_trained_network(model_dir: str | Path) -> nn.Module:
    """Rebuild a trained network from its folder (safetensors weights, no pickle).

    Parameters
    ----------
    model_dir : str or Path
        A folder written by :func:`run_deep_arm` (``network.json`` + ``network.safetensors``).

    Returns
    -------
    torch.nn.Module
        The network in evaluation mode on the CPU; the input it expects is described by
        :func:`load_network_spec`.

    Raises
    ------
    RadfusionError
        Missing files, or weights that do not fit the described architecture.
    """
    from safetensors.torch import load_file

    spec = load_network_spec(model_dir)
    path = ArmLayout(Path(model_dir)).weights
    if not path.is_file():
        raise RadfusionError(f"{model_dir} has no {WEIGHTS_FILE}")
    model = build_resnet(spec.depth, spec.in_channels, num_classes=1)
    try:
        weights = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError and OSError: not a safetensors file
        raise RadfusionError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise RadfusionError(f"{path} does not fit {spec.model_name}: {exc}") from None
    return model.eval()


def predict_cases(
    model_dir: str | Path,
    cases: Sequence[Case] | Cohort,
    *,
    mask_source: Literal["mask", "mask_reader2"] = "mask",
    device: str = "auto",
    batch_size: int = 16,
    dicom_frame: int = 0,
    mask_label: int | None = None,
    cache_dir: Path | None = None,
    model: nn.Module | None = None,
) -> pd.DataFrame:
    """Score images with a trained arm: probability of label 1 and the deep features.

    Parameters
    ----------
    model_dir : str or Path
        A trained arm folder.
    cases : sequence of Case, or Cohort
        Images (and ROIs for 2ch) to score; ``label`` is not used.
    mask_source : {"mask", "mask_reader2"}
        ROI used as the 2ch mask channel.
    device : {"auto", "cpu", "cuda"}
    batch_size : int
    dicom_frame, mask_label
        Reader settings (as ``DataConfig``).
    cache_dir : Path, optional
        Reuse / store network inputs there (default: in memory only).
    model : torch.nn.Module, optional
        An already loaded network from ``model_dir`` (saves reloading it).

    Returns
    -------
    DataFrame
        Index ``case_id``; column ``probability`` then the ``dl<arm>_*`` features.

    Raises
    ------
    InputError
        Images or ROIs that cannot be read (all listed).
    """
    spec = load_network_spec(model_dir)
    net = model if model is not None else load_trained_network(model_dir)
    dev = resolve_device(device)
    case_list = cases.cases() if isinstance(cases, Cohort) else list(cases)
    cache = InputCache(cache_dir, dicom_frame, mask_label)
    arrays = build_inputs(case_list, spec.input, cache, mask_source=mask_source)
    rows = [InputRow(c.case_id, c.case_id, 0, "") for c in case_list if c.case_id in arrays]
    net.to(dev)
    try:
        out = infer(
            net, DeepDataset(arrays, rows), device=dev, batch_size=batch_size, features=True
        )
    finally:
        net.to("cpu")
    assert out.features is not None
    feats = features_frame([r.case_id for r in rows], out.features, spec.arm)
    feats.insert(0, "probability", out.probabilities)
    return feats
