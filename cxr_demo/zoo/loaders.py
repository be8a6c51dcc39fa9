"""How each zoo kind is built from its config and safetensors state: one loader per kind, all registered when this
module is imported (as timm's `register_model`), so the zoo never goes looking for one.

A loader gets the spec, config.json, the state dict and the folder, and returns the module in eval mode or raises
ModelUnavailable saying what does not fit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from cxr_demo.zoo.spec import ModelSpec, ModelUnavailable
from cxr_demo.zoo.task_table import KINDS

Loader = Callable[[ModelSpec, dict, dict, Path], torch.nn.Module]
LOADERS: dict[str, Loader] = {}


def register_loader(*kinds: str) -> Callable[[Loader], Loader]:
    """Register the builder of one or more zoo kinds. A kind has one loader: a second registration is a bug, not an override."""
    def wrap(fn: Loader) -> Loader:
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"Loader {fn.__name__}: {kind!r} is not a zoo kind; add it to cxr_demo/zoo/task_table.py first.")
            if kind in LOADERS:
                raise ValueError(f"A loader for {kind!r} is already registered ({LOADERS[kind].__name__}); remove one of them.")
            LOADERS[kind] = fn
        return fn
    return wrap


@register_loader("check")
def _load_input_check(spec: ModelSpec, config: dict, state: dict, folder: Path) -> torch.nn.Module:
    """The input check needs no gradients, so it runs in ONNX Runtime like the segmenters (a third of eager's time)."""
    from cxr_demo.zoo.runtime import with_onnxruntime

    model = _load_timm_classifier(spec, config, state, folder).eval()
    example = torch.zeros(1, int(config.get("model_args", {}).get("in_chans", 3)), spec.input_size, spec.input_size)
    return with_onnxruntime(model, example, spec.name)


@register_loader("classify")
def _load_timm_classifier(spec: ModelSpec, config: dict, state: dict, folder: Path) -> torch.nn.Module:
    import timm

    labels = list(config.get("label_names") or spec.labels)
    if spec.labels and list(spec.labels) != labels:
        raise ModelUnavailable(f"Model {spec.name!r}: zoo.toml labels {list(spec.labels)} differ from the checkpoint's {labels}.")
    try:
        model = timm.create_model(spec.arch, pretrained=False, num_classes=len(labels), **config.get("model_args", {}))
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as error:
        raise ModelUnavailable(f"Model {spec.name!r}: the weights do not fit architecture {spec.arch!r} ({str(error).splitlines()[0]}).") from None
    return model.to(memory_format=torch.channels_last)


def smp_shape(decoder_channels, encoder_depth: int = 5) -> dict:
    """The smp keyword arguments for a U-Net shaped other than smp's default, and the keys config.json keeps them under:
    `train.segment` writes them and the loader reads them back through this one function, so a checkpoint loads as trained."""
    shape = {"decoder_channels": tuple(decoder_channels)} if decoder_channels else {}
    return shape | ({"encoder_depth": encoder_depth} if encoder_depth != 5 else {})


@register_loader("segment", "multitask")
def _load_smp_segmenter(spec: ModelSpec, config: dict, state: dict, folder: Path) -> torch.nn.Module:
    """smp models; a multi-task checkpoint also has a class head on the encoder (`aux_classes`)."""
    import segmentation_models_pytorch as smp

    aux = dict(classes=config["aux_classes"]) if config.get("aux_classes") else None
    shape = smp_shape(config.get("decoder_channels") or (), config.get("encoder_depth", 5))
    try:
        model = smp.create_model(config.get("architecture", spec.arch), encoder_name=config["encoder_name"], encoder_weights=None,
                                 in_channels=config.get("in_channels", 1), classes=config.get("classes", 1), aux_params=aux, **shape)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as error:
        raise ModelUnavailable(f"Model {spec.name!r}: the weights do not fit {spec.arch!r} ({str(error).splitlines()[0]}).") from None
    from cxr_demo.zoo.runtime import with_onnxruntime

    example = torch.zeros(1, config.get("in_channels", 1), spec.input_size, spec.input_size)
    return with_onnxruntime(model.eval().to(memory_format=torch.channels_last), example, spec.name)


@register_loader("zeroshot")
def _load_open_clip(spec: ModelSpec, config: dict, state: dict, folder: Path) -> torch.nn.Module:
    """open_clip's local-dir layout (open_clip_config.json); the text tower is built from text/config.json, offline."""
    from cxr_demo.zoo.clip_model import ImageTower, ZeroShotModel, build_from_folder
    from cxr_demo.zoo.runtime import with_onnxruntime

    try:
        model, tokenizer = build_from_folder(folder)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, OSError, ValueError) as error:
        raise ModelUnavailable(f"Model {spec.name!r}: cannot build the open_clip model in {folder} ({str(error).splitlines()[0]}).") from None
    example = torch.zeros(1, len(spec.mean), spec.input_size, spec.input_size)
    return ZeroShotModel(model.eval(), tokenizer, with_onnxruntime(ImageTower(model).eval(), example, spec.name))


@register_loader("detect")
def _load_faster_rcnn(spec: ModelSpec, config: dict, state: dict, folder: Path) -> torch.nn.Module:
    """torchvision normalises inside the detector, so zoo.toml's mean/std are built into it (a gray mean is repeated to RGB)."""
    from cxr_demo.zoo.detector import DetectorSpec, build_detector

    try:
        detector = DetectorSpec.from_dict({**config["detector"], "frozen_bn": True})  # eval: BN is frozen either way
        if spec.labels and list(spec.labels) != list(detector.label_names):
            raise ModelUnavailable(f"Model {spec.name!r}: zoo.toml labels {list(spec.labels)} differ from the checkpoint's {list(detector.label_names)}.")
        model = build_detector(detector, mean=_rgb(spec.mean), std=_rgb(spec.std))
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as error:
        raise ModelUnavailable(f"Model {spec.name!r}: the weights do not fit {spec.arch!r} ({str(error).splitlines()[0]}).") from None
    return model


def _rgb(values: tuple[float, ...]) -> tuple[float, ...]:
    return values * 3 if len(values) == 1 else values


def check_normalisation(spec: ModelSpec, config: dict) -> None:
    """zoo.toml's mean/std feed the network; a checkpoint trained with other statistics would be silently wrong."""
    trained = config.get("pretrained_cfg", {})
    for key in ("mean", "std"):
        if key in trained and tuple(float(v) for v in trained[key]) != tuple(float(v) for v in getattr(spec, key)):
            raise ModelUnavailable(f"Model {spec.name!r}: zoo.toml gives {key} {list(getattr(spec, key))}, but the checkpoint was trained "
                                   f"with {trained[key]} (config.json pretrained_cfg). Copy the checkpoint's values into zoo.toml.")
