"""The MONAI-built ResNets are the canonical He et al. (2016) networks."""

from __future__ import annotations

import pytest
import torch

from radfusion.deep.networks import build_resnet, feature_dim, forward_with_features


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def blocks_per_stage(model: torch.nn.Module) -> list[int]:
    return [len(getattr(model, f"layer{i}")) for i in range(1, 5)]


# Published parameter counts of the ImageNet ResNets (3 inputs, 1000 classes).
@pytest.mark.parametrize(
    ("depth", "expected"), [(18, 11_689_512), (50, 25_557_032), (101, 44_549_160)]
)
def test_imagenet_shaped_resnet_has_canonical_parameter_count(depth: int, expected: int) -> None:
    assert n_params(build_resnet(depth, in_channels=3, num_classes=1000)) == expected


def test_resnet101_layer_shapes_are_canonical() -> None:
    m = build_resnet(101, in_channels=3, num_classes=1000)
    assert tuple(m.conv1.weight.shape) == (64, 3, 7, 7)
    assert m.conv1.stride == (2, 2) and m.conv1.padding == (3, 3) and m.conv1.bias is None
    assert blocks_per_stage(m) == [3, 4, 23, 3]
    assert tuple(m.fc.weight.shape) == (1000, 2048)
    # Projection shortcut of each stage: 1x1 conv without bias, then batch norm.
    for stage, (cin, cout, stride) in enumerate(
        [(64, 256, 1), (256, 512, 2), (512, 1024, 2), (1024, 2048, 2)], start=1
    ):
        ds = getattr(m, f"layer{stage}")[0].downsample
        assert tuple(ds[0].weight.shape) == (cout, cin, 1, 1)
        assert ds[0].bias is None and ds[0].stride == (stride, stride)
        assert isinstance(ds[1], torch.nn.BatchNorm2d)
    # v1.5 bottleneck: the stride sits on the 3x3 convolution.
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)


def test_resnet18_shortcuts_are_projections_like_torchvision() -> None:
    m = build_resnet(18, in_channels=3, num_classes=1000)
    assert blocks_per_stage(m) == [2, 2, 2, 2]
    assert m.layer1[0].downsample is None
    assert tuple(m.layer2[0].downsample[0].weight.shape) == (128, 64, 1, 1)


@pytest.mark.parametrize(("depth", "dim", "size"), [(18, 512, 64), (101, 2048, 32)])
def test_pooled_features_have_the_penultimate_width(depth: int, dim: int, size: int) -> None:
    torch.manual_seed(0)
    m = build_resnet(depth, in_channels=2, num_classes=1).eval()
    x = torch.randn(2, 2, size, size)
    with torch.no_grad():
        logits, feats = forward_with_features(m, x)
        assert feats.shape == (2, dim) == (2, feature_dim(depth))
        assert logits.shape == (2, 1)
        # The captured features are what the head sees.
        assert torch.allclose(m.fc(feats), logits, atol=1e-6)
        assert torch.allclose(m(x), logits)
    assert not m.avgpool._forward_hooks  # the temporary hook is gone


def test_unsupported_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported ResNet depth 20"):
        build_resnet(20, 1)


def test_threads_sharing_a_network_each_get_their_own_features() -> None:
    # A served network is shared by concurrent requests. Barriers force the
    # interleaving that once mixed them up: both threads have registered their
    # capture before either runs, and both have pooled before either reads.
    import threading

    model = build_resnet(18, in_channels=1, num_classes=2).eval()
    started, pooled = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)

    def waits(barrier: threading.Barrier):
        def hook(*_: object) -> None:  # returns None: a pre-hook's result replaces the input
            barrier.wait()

        return hook

    hooks = [
        model.conv1.register_forward_pre_hook(waits(started)),
        model.fc.register_forward_pre_hook(waits(pooled)),
    ]
    inputs = [torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)]
    got: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        with torch.no_grad():
            got[i] = forward_with_features(model, inputs[i])[1]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in hooks:
        h.remove()
    for i in range(2):
        with torch.no_grad():
            alone = forward_with_features(model, inputs[i])[1]
        torch.testing.assert_close(got[i], alone, rtol=0, atol=0)
    assert not torch.equal(got[0], got[1])
