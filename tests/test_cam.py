"""One suite for every architecture family (as smp's BaseModelTester): each gives a heatmap of the input's size."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from cxr_demo.zoo import architectures  # noqa: F401  (registers cxr_simple_cnn, cxr_swin_atto, cxr_vit_hybrid_lite0)
from cxr_demo.tasks.cam import METHODS, SLOW_METHODS, class_activation_map, forward_only_gradcam, reshape_transform, target_layer
from cxr_demo.zoo.gate import capture_pre_logits

ARCHITECTURES = {
    "efficientnet": dict(name="tf_efficientnet_lite0", size=128),
    "mobilenet": dict(name="mobilenetv2_035", size=128),
    "convnext": dict(name="convnext_atto", size=128),
    "resnet": dict(name="resnet10t", size=128),
    "vit": dict(name="vit_tiny_patch16_224", size=96, kwargs=dict(img_size=96)),
    "vit-registers": dict(name="vit_small_patch14_reg4_dinov2", size=70, kwargs=dict(img_size=70, depth=2)),
    "deit-rect": dict(name="deit_tiny_patch16_224", size=(64, 128), kwargs=dict(img_size=(64, 128))),
    "swin": dict(name="swin_tiny_patch4_window7_224", size=224, kwargs=dict(depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1))),
    # the zoo's own registered architectures (cxr_demo.zoo.architectures)
    "simple-cnn": dict(name="cxr_simple_cnn", size=128),
    "swin-atto": dict(name="cxr_swin_atto", size=128, kwargs=dict(depths=(1, 1, 1, 1))),
    "vit-hybrid": dict(name="cxr_vit_hybrid_lite0", size=128, kwargs=dict(depth=1)),
}
# average pool + one linear layer, where GradCAM needs no gradients (a LayerNorm after the pool, as in ConvNeXt, breaks that)
FORWARD_ONLY_FAMILIES = {"efficientnet", "mobilenet", "resnet", "simple-cnn"}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def model_and_input(request):
    arch = ARCHITECTURES[request.param]
    torch.manual_seed(0)
    model = timm.create_model(arch["name"], pretrained=False, num_classes=3, in_chans=1, **arch.get("kwargs", {})).eval()
    h, w = (arch["size"], arch["size"]) if isinstance(arch["size"], int) else arch["size"]
    return request.param, model, torch.randn(1, 1, h, w)


class TestEveryArchitecture:
    def test_heatmap_matches_input_and_is_informative(self, model_and_input):
        family, model, x = model_and_input
        heatmap, logits = class_activation_map(model, x, "GradCAM")
        assert heatmap.shape == tuple(x.shape[-2:])
        assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
        assert logits.shape == (1, 3)

    def test_logits_are_those_of_a_plain_forward(self, model_and_input):
        _, model, x = model_and_input
        _, logits = class_activation_map(model, x, "GradCAM")
        with torch.inference_mode():
            torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)

    def test_forward_only_gradcam_is_the_librarys_gradcam_where_it_applies(self, model_and_input):
        family, model, x = model_and_input
        fast = forward_only_gradcam(model, x, family)
        assert (fast is not None) == (family in FORWARD_ONLY_FAMILIES)
        if fast is None:
            return
        logits, pooled, features = fast(x)
        with torch.inference_mode(), capture_pre_logits(model) as gate_features:
            torch.testing.assert_close(logits, model(x), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(pooled, gate_features[0], rtol=1e-3, atol=1e-3)  # what the feature gate scores
        for index in range(3):
            expected, _ = class_activation_map(model, x, "GradCAM", index)
            np.testing.assert_allclose(fast.heatmap(features, index, tuple(x.shape[-2:])), expected, atol=1e-3)

    def test_target_layer_output_becomes_a_map(self, model_and_input):
        family, model, x = model_and_input
        captured = {}
        handle = target_layer(model).register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
        with torch.inference_mode():
            model(x)
        handle.remove()
        fmap = reshape_transform(model)(captured["out"])
        assert fmap.ndim == 4 and fmap.shape[0] == 1
        assert fmap.shape[1] > fmap.shape[2]  # channels first after the transform

    def test_parameters_keep_requires_grad(self, model_and_input):
        _, model, x = model_and_input
        before = [p.requires_grad for p in model.parameters()]
        class_activation_map(model, x, "GradCAM++")
        assert [p.requires_grad for p in model.parameters()] == before


def test_vit_grid_comes_from_the_model_not_a_constant():
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=(64, 128)).eval()
    tokens = torch.randn(1, model.num_prefix_tokens + 4 * 8, model.num_features)
    assert reshape_transform(model)(tokens).shape == (1, model.num_features, 4, 8)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in SLOW_METHODS])
def test_every_method_runs(method):
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_035", pretrained=False, num_classes=3, in_chans=1).eval()
    heatmap, _ = class_activation_map(model, torch.randn(1, 1, 96, 96), method)
    assert heatmap.shape == (96, 96) and np.isfinite(heatmap).all()


def test_slow_method_runs_on_a_small_model():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=1).eval()
    heatmap, _ = class_activation_map(model, torch.randn(1, 1, 64, 64), "ScoreCAM")
    assert heatmap.shape == (64, 64)


def test_explained_class_changes_the_heatmap():
    torch.manual_seed(1)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=1).eval()
    x = torch.randn(1, 1, 96, 96)
    maps = [class_activation_map(model, x, "HiResCAM", k)[0] for k in range(3)]
    assert not np.allclose(maps[0], maps[1])


def test_unknown_method_lists_choices():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=1).eval()
    with pytest.raises(ValueError, match="GradCAM"):
        class_activation_map(model, torch.randn(1, 1, 64, 64), "MagicCAM")


@pytest.mark.parametrize("onnx", ["1", "0"])
def test_a_models_forward_only_gradcam_goes_when_the_model_goes(onnx, monkeypatch):
    import gc
    import weakref

    monkeypatch.setenv("CXR_DEMO_ONNX", onnx)
    model = timm.create_model("mobilenetv2_035", pretrained=False, num_classes=3, in_chans=1).eval()
    fast = forward_only_gradcam(model, torch.randn(1, 1, 64, 64), "leak-probe")
    assert fast is not None
    logits, _, _ = fast(torch.randn(1, 1, 64, 64))
    assert logits.shape == (1, 3)
    gone = weakref.ref(model)
    del model, fast
    gc.collect()
    assert gone() is None  # a zoo model swapped out of memory must not be kept alive by its heatmap cache
