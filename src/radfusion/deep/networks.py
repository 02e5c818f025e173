"""The canonical 2D ResNet, built with MONAI.

radfusion wraps :class:`monai.networks.nets.ResNet` rather than writing its own
network. MONAI's defaults are tuned for 3D medical volumes (first convolution
stride 1, bias in the projection shortcuts, parameter-free "A" shortcuts for
ResNet-18/34); :func:`build_resnet` sets the arguments that give exactly the
ResNet of He et al. (2016) as ImageNet weights expect it (the "v1.5" layout of
torchvision / timm, stride on the 3x3 convolution of a bottleneck):

* first convolution 7x7, stride 2, padding 3, no bias, then 3x3 max-pool stride 2;
* projection ("B") shortcuts, 1x1 convolution without bias + batch norm, wherever
  the shape changes, for every depth;
* stages of [2,2,2,2] / [3,4,6,3] basic blocks (18 / 34) and [3,4,6,3] /
  [3,4,23,3] / [3,8,36,3] bottlenecks (50 / 101 / 152);
* global average pool -> 512 (18, 34) or 2048 (50, 101, 152) features -> ``fc``.

The module names are those of torchvision (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc`` ...), so an ImageNet state
dict loads by name (see :mod:`radfusion.deep.weights`).
"""

from __future__ import annotations

import threading

import torch
from monai.networks.nets import ResNet
from torch import nn

#: (block, blocks per stage) of each supported depth.
RESNET_LAYOUT: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def feature_dim(depth: int) -> int:
    """Width of the global-average-pool output: 512 for ResNet-18/34, 2048 for 50/101/152."""
    block, _ = _layout(depth)
    return STAGE_WIDTHS[-1] * (4 if block == "bottleneck" else 1)


def _layout(depth: int) -> tuple[str, tuple[int, int, int, int]]:
    if depth not in RESNET_LAYOUT:
        raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNET_LAYOUT)}")
    return RESNET_LAYOUT[depth]


def build_resnet(depth: int, in_channels: int, num_classes: int = 1) -> ResNet:
    """A canonical 2D ResNet (He et al. 2016) built with MONAI.

    Parameters
    ----------
    depth : {18, 34, 50, 101, 152}
        Number of weighted layers.
    in_channels : int
        Input channels: 1 for the 1ch arm (image), 2 for the 2ch arm (image + ROI),
        3 for an ImageNet-shaped network.
    num_classes : int
        Outputs of the final fully connected layer: 1 (one logit, radfusion's binary
        training with BCE-with-logits), 2, or 1000 for an ImageNet-shaped network.

    Returns
    -------
    monai.networks.nets.ResNet
        Randomly initialised (Kaiming normal convolutions, unit batch-norm scales),
        with torchvision module names.

    Raises
    ------
    ValueError
        Unsupported depth, or non-positive channel / class counts.
    """
    block, layers = _layout(depth)
    if in_channels < 1 or num_classes < 1:
        raise ValueError(
            f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}"
        )
    return ResNet(
        block=block,
        layers=list(layers),
        block_inplanes=list(STAGE_WIDTHS),
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        no_max_pool=False,
        shortcut_type="B",
        num_classes=num_classes,
        bias_downsample=False,
    )


class _PoolCapture:
    """Forward hook keeping the global-average-pool output of its own thread's forward pass.

    A served model is shared by concurrent requests, each registering its own hook on
    the same ``avgpool``; every hook fires on every thread's forward pass, so a hook
    that recorded any call would hand one request another's features. PyTorch runs a
    module's hooks in the thread that called it, so the thread id tells them apart.
    """

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None
        self._thread = threading.get_ident()

    def __call__(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        # a compiled network (``deep.compile``, training only, one thread) traces this
        # hook: the thread check would break its graph
        if torch.compiler.is_compiling() or threading.get_ident() == self._thread:
            self.value = output


def forward_with_features(model: ResNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the network once and return ``(logits, pooled_features)``.

    The features are the global-average-pool output (the paper's "second-to-last
    average-pooling layer"), flattened to ``(N, feature_dim)``. A temporary hook on
    ``model.avgpool`` captures them, so MONAI's own forward runs unchanged; it is safe
    when several threads share ``model`` (see ``_PoolCapture``).
    """
    capture = _PoolCapture()
    handle = model.avgpool.register_forward_hook(capture)
    try:
        logits = model(x)
    finally:
        handle.remove()
    assert capture.value is not None
    return logits, torch.flatten(capture.value, 1)
