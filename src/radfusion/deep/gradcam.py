"""Grad-CAM heatmaps of the 1ch / 2ch ResNets (Selvaraju et al. 2017).

Computed with :class:`monai.visualize.GradCAM` on ``layer4`` (the last
convolutional stage) for the network's single logit, i.e. for the evidence in
favour of label 1 (APT/PC, malignant). The map is upsampled to the input size
and scaled to [0, 1] per image (MONAI's default post-processing inverts the
scale; radfusion keeps "1 = most evidence").

The network is deep-copied before MONAI registers its hooks, so the caller's
model is left exactly as it was.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radfusion.utils import atomic_path


def _unit_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1] (a flat map becomes all zeros)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(x))


def gradcam_map(
    model: nn.Module,
    x: torch.Tensor,
    target_layer: str = "layer4",
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Grad-CAM heatmaps for a batch of network inputs.

    Parameters
    ----------
    model : torch.nn.Module
        A trained radfusion ResNet (one output logit).
    x : tensor
        ``(C, H, W)`` or ``(N, C, H, W)`` standardised network input(s).
    target_layer : str
        Module whose activations and gradients are used (``layer4``: last conv stage).
    device : torch.device or str

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` (or ``(N, H, W)``) heatmap(s) in [0, 1], the input's size.
    """
    from monai.visualize import GradCAM

    single = x.dim() == 3
    batch = (x[None] if single else x).float().to(device)
    net = copy.deepcopy(model).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(True)
    cam = GradCAM(nn_module=net, target_layers=target_layer, postprocessing=_unit_scale)
    try:
        with torch.enable_grad():
            heat = cam(batch, class_idx=0)
        out = heat.detach().float().cpu().numpy()[:, 0]
    finally:
        # MONAI keeps the layer's output, whose autograd graph holds the backward hook,
        # whose closure holds MONAI's wrapper again: a loop through C++ objects that
        # Python's garbage collector cannot see, so the network copy, its gradients and
        # the activations would never be freed (~175 MB per call in `radfusion serve`).
        # Dropping the wrapper's network also ends the plain Python loop (network ->
        # hook -> wrapper -> network), so the copy is freed now, not at some later
        # garbage collection.
        hooked = cam.nn_module
        hooked.activations.clear()
        hooked.gradients.clear()
        hooked.score = None
        hooked.model = None
    return out[0] if single else out


def save_gradcam_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    path: str | Path,
    mask: np.ndarray | None = None,
    title: str | None = None,
    alpha: float = 0.45,
) -> Path:
    """Write a PNG of the heatmap over the grayscale image (and the ROI outline).

    Parameters
    ----------
    image : (H, W) array
        The network-input image in [0, 1] (before standardisation).
    heatmap : (H, W) array
        Grad-CAM map in [0, 1] on the same grid.
    path : str or Path
        Output PNG, written atomically.
    mask : (H, W) array, optional
        ROI drawn as a contour (2ch arm).
    title : str, optional
    alpha : float
        Heatmap opacity.

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg output

    path = Path(path)
    fig = Figure(figsize=(7.2, 3.8), dpi=110)
    axes = fig.subplots(1, 2)
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_axis_off()
        if mask is not None and np.any(mask):
            ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors="lime", linewidths=0.8)
    im = axes[1].imshow(heatmap, cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha)
    axes[0].set_title("input", fontsize=9)
    axes[1].set_title("Grad-CAM (layer4)", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
