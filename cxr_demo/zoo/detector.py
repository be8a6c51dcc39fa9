"""The detector architectures: torchvision's Faster R-CNN recipes around an ImageNet-compatible backbone,
rebuilt from config.json["detector"] by the zoo and built fresh by `train.detect`."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision import models
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.misc import FrozenBatchNorm2d

# ImageNet statistics: the gray image is repeated into the three channels the ImageNet-initialised backbones expect
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

ARCHITECTURES = (
    "fasterrcnn_mobilenet_v2_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_resnet50_fpn",
)
BACKBONES = {"fasterrcnn_mobilenet_v2_fpn": "mobilenet_v2", "fasterrcnn_mobilenet_v3_large_fpn": "mobilenet_v3_large",
             "fasterrcnn_resnet50_fpn": "resnet50"}


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to rebuild the network; written to config.json["detector"]."""

    arch: str = "fasterrcnn_mobilenet_v2_fpn"
    label_names: tuple[str, ...] = ("Lung Opacity",)
    input_size: int = 512
    representation_size: int = 1024  # the box head's MLP width; 256x7x7 -> this is most of the model's weights
    trainable_layers: int = 3
    frozen_bn: bool = True  # an ImageNet-initialised backbone keeps its batch-norm statistics (tiny batches)
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    detections_per_img: int = 100
    # training only: proposals and sampled RoIs per image (the box head's cost on CPU grows with both)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    box_batch_size_per_image: int = 512

    @classmethod
    def from_dict(cls, values: dict) -> "DetectorSpec":
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict:
        return {**asdict(self), "label_names": list(self.label_names)}


def backbone_network(spec: DetectorSpec) -> torch.nn.Module:
    """The classification network the detector's backbone is cut from (ImageNet-compatible keys, for `--init`)."""
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"Unknown detector architecture {spec.arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    norm = FrozenBatchNorm2d if spec.frozen_bn else torch.nn.BatchNorm2d
    return models.get_model(BACKBONES[spec.arch], weights=None, norm_layer=norm)


def build_detector(spec: DetectorSpec, network: torch.nn.Module | None = None,
                   mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> FasterRCNN:
    """torchvision's Faster R-CNN recipes around a (possibly initialised) backbone network.

    The MobileNets use torchvision's own extractor and anchors (as in fasterrcnn_mobilenet_v3_large_fpn: two strided
    stages plus a pooled level, anchors 32-512 px at three aspect ratios on each); ResNet-50 the classic five-level FPN.
    """
    network = network if network is not None else backbone_network(spec)
    if spec.arch == "fasterrcnn_resnet50_fpn":
        backbone, anchors = _resnet_fpn_extractor(network, spec.trainable_layers), None
    else:
        backbone = _mobilenet_extractor(network, True, spec.trainable_layers)
        sizes = ((32, 64, 128, 256, 512),) * 3
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    resolution = 7  # torchvision's MultiScaleRoIAlign output size
    return FasterRCNN(
        backbone, num_classes=None, min_size=spec.input_size, max_size=spec.input_size,
        image_mean=list(mean), image_std=list(std), rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(backbone.out_channels * resolution**2, spec.representation_size),
        box_predictor=FastRCNNPredictor(spec.representation_size, len(spec.label_names) + 1),
        rpn_pre_nms_top_n_test=spec.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=spec.rpn_post_nms_top_n_test,
        rpn_pre_nms_top_n_train=spec.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=spec.rpn_post_nms_top_n_train,
        box_batch_size_per_image=spec.box_batch_size_per_image, box_detections_per_img=spec.detections_per_img,
    )
