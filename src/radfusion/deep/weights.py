"""ImageNet initialisation from a local ResNet weight file (nothing is ever downloaded).

Accepted files: a PyTorch state dict (``.pth`` / ``.pt`` / ``.bin``, read with
``torch.load(weights_only=True)``, so a file cannot run code) or a
``.safetensors`` file, with torchvision or timm key names. For the plain ResNets
both libraries use the same names (``conv1.weight``, ``bn1.*``,
``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc.weight`` ...),
which are also the names of the MONAI network of :func:`build_resnet`, so keys
map one to one. A ``state_dict`` / ``model`` / ``model_state_dict`` wrapper and a
``module.`` (DataParallel) prefix are removed. timm variants with a different
stem (``resnet50d``: ``conv1.0``, ``conv1.1`` ...) are not plain ResNets and are
refused with the list of mismatching keys.

First convolution (ImageNet kernels are ``64 x 3 x 7 x 7``, for RGB):

* image channel = the **sum** of the three RGB kernels. A grayscale image fed to
  the RGB network as three identical channels produces exactly
  ``sum_c W_c * x``; the summed kernel reproduces those activations on a single
  channel, so the pretrained batch-norm statistics stay valid (averaging would
  shrink every activation threefold).
* ROI-mask channel (2ch) = **zeros**. At initialisation the 2ch network then
  computes exactly the pretrained function of the image, and the mask kernel is
  learnt from there (its gradient does not depend on its value, so it moves away
  from zero at the first step). Copying the mean kernel instead would add a
  large, spatially structured signal the pretrained layers have never seen.
  ``mask_init="mean"`` gives that alternative.

The classifier head (``fc``) is never loaded: ImageNet has 1000 classes, the
study one logit; the network's own freshly initialised head is kept.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from radfusion.errors import RadfusionError

log = logging.getLogger(__name__)

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "network")
_HEAD_PREFIX = "fc."


@dataclass(frozen=True)
class WeightLoadReport:
    """What :func:`load_imagenet_weights` did.

    Attributes
    ----------
    path : Path
        The weight file.
    loaded : int
        Number of tensors copied into the network (the first convolution included).
    skipped_head : tuple of str
        Classifier keys of the file left out (``fc.weight``, ``fc.bias``).
    first_conv_rule : str
        How the first convolution was adapted, in words.
    """

    path: Path
    loaded: int
    skipped_head: tuple[str, ...]
    first_conv_rule: str


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{name: tensor}`` dict without executing code.

    Parameters
    ----------
    path : str or Path
        ``.safetensors``, or ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (PyTorch, loaded with
        ``weights_only=True``).

    Returns
    -------
    dict
        Tensors by key, wrapper dicts and ``module.`` prefixes removed.

    Raises
    ------
    RadfusionError
        Missing or unreadable file, or a file that holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise RadfusionError(f"pretrained weight file not found: {path}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch / safetensors raise many types for a bad file
        raise RadfusionError(
            f"pretrained weight file {path} could not be read as a PyTorch state dict or "
            f"safetensors file: {exc}"
        ) from None
    # Unwrap training checkpoints such as {"state_dict": {...}, "epoch": ...}.
    while isinstance(raw, dict) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        inner = next((raw[k] for k in _WRAPPERS if isinstance(raw.get(k), dict)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, dict):
        raise RadfusionError(f"{path} does not hold a state dict (found {type(raw).__name__})")
    tensors = {
        re.sub(r"^(module\.)+", "", str(k)): v
        for k, v in raw.items()
        if isinstance(v, torch.Tensor)
    }
    if not tensors:
        raise RadfusionError(f"{path} holds no tensors")
    return tensors


def guess_depth(state: dict[str, torch.Tensor]) -> int | None:
    """The ResNet depth whose layout a state dict has (None when it is not a plain ResNet)."""
    from radfusion.deep.networks import RESNET_LAYOUT

    blocks = []
    for stage in range(1, 5):
        idx = {
            int(m.group(1))
            for k in state
            if (m := re.match(rf"layer{stage}\.(\d+)\.", k)) is not None
        }
        blocks.append(max(idx) + 1 if idx else 0)
    kind = "bottleneck" if any(k.endswith(".conv3.weight") for k in state) else "basic"
    for depth, (block, layers) in RESNET_LAYOUT.items():
        if block == kind and tuple(blocks) == layers:
            return depth
    return None


def _display_order(key: str) -> tuple[int, list[Any]]:
    # Convolution weights first (they name the blocks), then in natural module order.
    is_conv = key.endswith(".weight") and ("conv" in key or "downsample.0" in key)
    parts: list[Any] = [int(p) if p.isdigit() else p for p in re.split(r"[.:]", key.split(" ")[0])]
    return (0 if is_conv else 1, parts)


def _adapt_first_conv(
    weight: torch.Tensor, in_channels: int, mask_init: Literal["zeros", "mean"]
) -> tuple[torch.Tensor, str]:
    """RGB first-convolution kernels -> 1 (image) or 2 (image + mask) input channels."""
    if weight.shape[1] == in_channels:
        return weight, "copied unchanged"
    if weight.shape[1] != 3:
        raise RadfusionError(
            f"first convolution of the weight file has {weight.shape[1]} input channels; "
            "expected 3 (RGB ImageNet weights)"
        )
    image = weight.sum(dim=1, keepdim=True)
    if in_channels == 1:
        return image, "image channel = sum of the RGB kernels"
    extra = (
        torch.zeros_like(image).expand(-1, in_channels - 1, -1, -1)
        if mask_init == "zeros"
        else weight.mean(dim=1, keepdim=True).expand(-1, in_channels - 1, -1, -1)
    )
    rule = f"image channel = sum of the RGB kernels; mask channel = {mask_init}"
    return torch.cat([image, extra], dim=1).contiguous(), rule


def load_imagenet_weights(
    model: nn.Module,
    path: str | Path,
    mask_init: Literal["zeros", "mean"] = "zeros",
) -> WeightLoadReport:
    """Initialise a radfusion ResNet from a local ImageNet ResNet state dict.

    Parameters
    ----------
    model : torch.nn.Module
        A network from :func:`radfusion.deep.networks.build_resnet` (any input channels).
    path : str or Path
        torchvision / timm ResNet weights of the same depth (``.pth``, ``.pt`` or
        ``.safetensors``).
    mask_init : {"zeros", "mean"}
        Initial kernel of input channels beyond the first (the 2ch arm's ROI mask); see the
        module docstring for why zeros is the default.

    Returns
    -------
    WeightLoadReport

    Raises
    ------
    RadfusionError
        The file is unreadable, or its keys / shapes do not match the network (the message
        lists the missing, unexpected and mismatched keys and the depth the file looks like).
    """
    path = Path(path)
    state = read_state_dict(path)
    target = model.state_dict()
    in_channels = int(target["conv1.weight"].shape[1])
    body_keys = {k for k in target if not k.startswith(_HEAD_PREFIX)}
    file_body = {k for k in state if not k.startswith(_HEAD_PREFIX)}
    missing = sorted(body_keys - file_body)
    unexpected = sorted(file_body - body_keys)
    # num_batches_tracked is bookkeeping that older exports omit; it is not a weight.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(target[k].shape)}"
        for k in sorted(body_keys & file_body)
        if k != "conv1.weight" and state[k].shape != target[k].shape
    ]
    if (
        "conv1.weight" in state
        and state["conv1.weight"].shape[0] != target["conv1.weight"].shape[0]
    ):
        wrong_shape.insert(0, f"conv1.weight: file {tuple(state['conv1.weight'].shape)}")
    if missing or unexpected or wrong_shape:
        depth = guess_depth(state)
        net_depth = guess_depth(target)
        looks = f"a ResNet-{depth}" if depth else "not a plain ResNet"
        parts = [
            f"pretrained weights {path} do not match the ResNet-{net_depth} network "
            f"(the file looks like {looks})."
        ]
        for title, items in (
            ("missing from the file", missing),
            ("unexpected in the file", unexpected),
            ("shape mismatch", wrong_shape),
        ):
            if items:
                items = sorted(items, key=_display_order)
                shown = ", ".join(items[:8]) + (
                    f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
                )
                parts.append(f"{len(items)} key(s) {title}: {shown}.")
        if depth and depth != net_depth:
            parts.append(f"Set deep.depth to {depth} or use a ResNet-{net_depth} weight file.")
        raise RadfusionError(" ".join(parts))

    conv1, rule = _adapt_first_conv(state["conv1.weight"], in_channels, mask_init)
    new_state = {k: state[k] for k in body_keys & file_body}
    new_state["conv1.weight"] = conv1
    with torch.no_grad():
        for k, v in new_state.items():
            target[k].copy_(v.to(dtype=target[k].dtype))
    head = tuple(sorted(k for k in state if k.startswith(_HEAD_PREFIX)))
    log.info("loaded %d tensors from %s (%s; head %s left out)", len(new_state), path, rule, head)
    return WeightLoadReport(path, len(new_state), head, rule)
