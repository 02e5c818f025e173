"""Local ImageNet weights (torchvision key layout) load onto the 1ch / 2ch networks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from radfusion.deep.networks import build_resnet, forward_with_features
from radfusion.deep.weights import guess_depth, load_imagenet_weights, read_state_dict
from radfusion.errors import RadfusionError

LAYOUT = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}


def torchvision_state(depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's ResNet key names and shapes, written out by hand."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        sd[name] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{name}.num_batches_tracked"] = torch.tensor(100)

    block, layers = LAYOUT[depth]
    conv("conv1.weight", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, n) in enumerate(zip([64, 128, 256, 512], layers, strict=True), start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            stride = 2 if (j == 0 and stage > 1) else 1
            if block == "basic":
                conv(f"{p}.conv1.weight", planes, inplanes, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2.weight", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                out = planes
            else:
                conv(f"{p}.conv1.weight", planes, inplanes, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2.weight", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3.weight", planes * 4, planes, 1)
                bn(f"{p}.bn3", planes * 4)
                out = planes * 4
            if j == 0 and (stride != 1 or inplanes != out):
                conv(f"{p}.downsample.0.weight", out, inplanes, 1)
                bn(f"{p}.downsample.1", out)
            inplanes = out
    sd["fc.weight"] = 0.01 * torch.randn(1000, inplanes, generator=g)
    sd["fc.bias"] = torch.zeros(1000)
    return sd


@pytest.fixture(scope="module")
def tv18() -> dict[str, torch.Tensor]:
    return torchvision_state(18)


def test_torchvision_names_are_the_network_names(tv18: dict[str, torch.Tensor]) -> None:
    net = build_resnet(18, 3, 1000).state_dict()
    assert set(net) == set(tv18)
    assert all(net[k].shape == v.shape for k, v in tv18.items())
    assert guess_depth(tv18) == 18


def test_rgb_network_loads_every_tensor_except_the_head(
    tmp_path: Path, tv18: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(tv18, path)
    model = build_resnet(18, 3, 1)
    report = load_imagenet_weights(model, path)
    state = model.state_dict()
    for k, v in tv18.items():
        if not k.startswith("fc."):
            assert torch.equal(state[k], v), k
    assert report.skipped_head == ("fc.bias", "fc.weight")
    assert state["fc.weight"].shape == (1, 512)


def test_one_channel_network_reproduces_the_rgb_network_on_gray_images(
    tmp_path: Path, tv18: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "w.safetensors"
    save_file(tv18, str(path))
    rgb, gray, two = build_resnet(18, 3, 1), build_resnet(18, 1, 1), build_resnet(18, 2, 1)
    for m in (rgb, gray, two):
        load_imagenet_weights(m, path)
        m.eval()
    conv1 = gray.conv1.weight.detach()
    assert torch.allclose(conv1[:, 0], tv18["conv1.weight"].sum(dim=1))
    assert torch.count_nonzero(two.conv1.weight.detach()[:, 1]) == 0  # mask kernel: zeros

    torch.manual_seed(1)
    x = torch.randn(2, 1, 64, 64)
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    with torch.no_grad():
        _, f_rgb = forward_with_features(rgb, x.repeat(1, 3, 1, 1))
        _, f_gray = forward_with_features(gray, x)
        _, f_two = forward_with_features(two, torch.cat([x, mask], dim=1))
    # Summed kernels: same activations as the gray image fed as RGB; the zero mask
    # kernel leaves the pretrained function of the image untouched.
    assert torch.allclose(f_gray, f_rgb, rtol=1e-4, atol=1e-5)
    assert torch.allclose(f_two, f_rgb, rtol=1e-4, atol=1e-5)


def test_mean_mask_init_option(tmp_path: Path, tv18: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "w.pth"
    torch.save(tv18, path)
    two = build_resnet(18, 2, 1)
    load_imagenet_weights(two, path, mask_init="mean")
    assert torch.allclose(two.conv1.weight.detach()[:, 1], tv18["conv1.weight"].mean(dim=1))


def test_wrapped_checkpoint_with_module_prefix_is_unwrapped(
    tmp_path: Path, tv18: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in tv18.items()}}, path)
    state = read_state_dict(path)
    assert set(state) == set(tv18)
    model = build_resnet(18, 1, 1)
    assert load_imagenet_weights(model, path).loaded == len(tv18) - 2


def test_weights_of_another_depth_are_refused_with_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision_state(34), path)
    model = build_resnet(18, 1, 1)
    before = model.conv1.weight.detach().clone()
    with pytest.raises(RadfusionError) as err:
        load_imagenet_weights(model, path)
    msg = str(err.value)
    assert "ResNet-18" in msg and "looks like a ResNet-34" in msg
    assert "unexpected in the file" in msg and "layer1.2.conv1.weight" in msg
    assert "Set deep.depth to 34" in msg
    assert torch.equal(model.conv1.weight.detach(), before)  # nothing half-loaded


def test_bottleneck_weights_into_basic_network_report_shape_mismatches(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.safetensors"
    save_file(torchvision_state(50), str(path))
    with pytest.raises(RadfusionError, match=r"looks like a ResNet-50.*shape mismatch"):
        load_imagenet_weights(build_resnet(34, 2, 1), path)


def test_deep_stem_variant_is_not_a_plain_resnet(
    tmp_path: Path, tv18: dict[str, torch.Tensor]
) -> None:
    sd = dict(tv18)
    sd["conv1.0.weight"] = sd.pop("conv1.weight")
    path = tmp_path / "resnet18d.pth"
    torch.save(sd, path)
    with pytest.raises(RadfusionError, match=r"missing from the file: conv1\.weight"):
        load_imagenet_weights(build_resnet(18, 1, 1), path)


class Payload:
    """Arbitrary object: a weights_only load must refuse to unpickle it."""


def test_file_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(RadfusionError, match="could not be read"):
        read_state_dict(path)
    with pytest.raises(RadfusionError, match="not found"):
        read_state_dict(tmp_path / "absent.pth")
