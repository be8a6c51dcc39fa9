"""Detect findings as boxes with a zoo Faster R-CNN: the seeds' preprocessing (shared with training), the detector
architectures, the zoo loader, the predictor, ground-truth box checks and the box overlay.

    from cxr_demo import detect
    result = detect.predict(read_xray("cxr.dcm"), score_threshold=0.3, nms_iou=0.5)
    result.boxes  # Box(x0, y0, x1, y1, label, score) in the uploaded image's pixels

Preprocessing (the seed's, in this order): the stored range to 0-255 and MONOCHROME1 inversion (both done by `read_xray`),
a crop to the lung field found from the row and column mean profiles, histogram equalization of the crop, and a resize
so the longest side is the model's input size. `prepare` applies the same geometry to boxes, so training and inference agree.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torchvision import models, tv_tensors
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import box_iou
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes

from cxr_demo import zoo
from cxr_demo.io import XRay
from cxr_demo.preprocess import to_uint8
from cxr_demo.render import display_pixels, font_file, gray_to_rgb_uint8



def demo_warning(train_images: int = 16) -> str:
    """What the app and the model card say about a detector trained on a handful of images."""
    return (f"Demo detector: trained on only {train_images} chest X-rays with boxes and scored on a handful of held-out ones. "
            "It misses findings and boxes normal anatomy; treat every box as an illustration, not a finding.")


DEMO_WARNING = demo_warning(16)  # the shipped opacity-frcnn-mobilenetv2: 16 RSNA 'Lung Opacity' images
# ImageNet statistics: the gray image is repeated into the three channels the ImageNet-initialised backbones expect
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BOX_COLOUR = (255, 80, 40)
REFERENCE_COLOUR = (255, 210, 0)
CROP_COLOUR = (0, 190, 255)


# --- preprocessing shared by training and inference -------------------------------------------------------------


@dataclass(frozen=True)
class DetectPreprocess:
    """The seed's preprocessing as options; stored in the checkpoint's config so inference repeats training."""

    input_size: int = 512  # longest side fed to the network
    equalize: bool = True
    crop_max_cut: float = 0.25  # lung crop: the most it may cut from each side (a share of the side); 0 = no crop

    @classmethod
    def from_options(cls, options: dict, input_size: int) -> "DetectPreprocess":
        return cls(input_size, options.get("preprocess", "equalize") == "equalize", float(options.get("crop_max_cut", 0.25)))


@dataclass(frozen=True)
class Prepared:
    image: torch.Tensor  # uint8 (1, H, W): what the network sees
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 of the crop in the source pixels
    boxes: tv_tensors.BoundingBoxes | None = None  # the given boxes, moved with the image

    @property
    def scale(self) -> tuple[float, float]:
        """Network pixels per source pixel, along x and y."""
        x0, y0, x1, y1 = self.crop
        return self.image.shape[-1] / (x1 - x0), self.image.shape[-2] / (y1 - y0)

    def to_source(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (N, 4) xyxy from the network's pixels back to the source image's pixels."""
        sx, sy = self.scale
        return boxes / torch.tensor([sx, sy, sx, sy]) + torch.tensor([self.crop[0], self.crop[1]] * 2, dtype=boxes.dtype)


def lung_crop_box(pixels: np.ndarray, max_cut: float = 0.25, margin: float = 0.02) -> tuple[int, int, int, int]:
    """The seed's lung crop from the row and column mean profiles: (x0, y0, x1, y1).

    Rows and columns at the edges whose mean is far darker than the image's median profile (black borders, air
    beside the body) or near white (collimator shutters, burnt-in labels) are trimmed. No side loses more than
    `max_cut` of the image: a crop that ate into a lung would silently remove the findings the detector is for.
    """
    h, w = pixels.shape
    if max_cut <= 0:
        return 0, 0, w, h
    y0, y1 = _content_range(pixels.mean(axis=1), max_cut, margin)
    x0, x1 = _content_range(pixels.mean(axis=0), max_cut, margin)
    return x0, y0, x1, y1


def _content_range(profile: np.ndarray, max_cut: float, margin: float) -> tuple[int, int]:
    n = len(profile)
    smooth = ndimage.uniform_filter1d(profile.astype(np.float32), size=max(3, n // 50), mode="nearest")
    content = np.flatnonzero((smooth > 0.35 * np.median(smooth)) & (smooth < 0.95))
    first, last = (content[0], content[-1] + 1) if len(content) else (0, n)
    pad, limit = round(margin * n), round(max_cut * n)
    return int(min(max(first - pad, 0), limit)), int(max(min(last + pad, n), n - limit))


def prepare(pixels: np.ndarray, options: DetectPreprocess, boxes: torch.Tensor | None = None) -> Prepared:
    """Float [0, 1] HxW pixels (and optional xyxy boxes in the same pixels) to the network's uint8 image (and boxes).

    The crop and resize go through torchvision's box-aware functional ops, so boxes follow the image exactly;
    equalization runs after the crop so black borders do not shape the histogram.
    """
    x0, y0, x1, y1 = lung_crop_box(pixels, options.crop_max_cut)
    image = tv_tensors.Image(torch.from_numpy(to_uint8(pixels))[None])
    bounding = None if boxes is None else tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=pixels.shape)
    image, bounding = _geometry(image, bounding, (x0, y0, x1, y1), options.input_size)
    plain = image.as_subclass(torch.Tensor)
    if options.equalize:
        plain = TF.equalize(plain)
    return Prepared(plain.contiguous(), (x0, y0, x1, y1), bounding)


def _geometry(image, boxes, crop: tuple[int, int, int, int], size: int):
    x0, y0, x1, y1 = crop
    items = [image] if boxes is None else [image, boxes]
    items = [TF.crop(item, y0, x0, y1 - y0, x1 - x0) for item in items]
    items = [TF.resize(item, None, max_size=size, antialias=True) for item in items]
    if boxes is None:
        return items[0], None
    return items[0], TF.clamp_bounding_boxes(items[1])


# --- the detector ----------------------------------------------------------------------------------------------

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


def build_detector(spec: DetectorSpec, network: torch.nn.Module | None = None) -> FasterRCNN:
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
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(backbone.out_channels * resolution**2, spec.representation_size),
        box_predictor=FastRCNNPredictor(spec.representation_size, len(spec.label_names) + 1),
        rpn_pre_nms_top_n_test=spec.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=spec.rpn_post_nms_top_n_test,
        rpn_pre_nms_top_n_train=spec.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=spec.rpn_post_nms_top_n_train,
        box_batch_size_per_image=spec.box_batch_size_per_image, box_detections_per_img=spec.detections_per_img,
    )


@zoo.register_loader("detect")
def _load_faster_rcnn(spec: zoo.ModelSpec, config: dict, state: dict, folder: Path) -> torch.nn.Module:
    try:
        detector = DetectorSpec.from_dict({**config["detector"], "frozen_bn": True})  # eval: BN is frozen either way
        if spec.labels and list(spec.labels) != list(detector.label_names):
            raise zoo.ModelUnavailable(f"Model {spec.name!r}: zoo.toml labels {list(spec.labels)} differ from the checkpoint's {list(detector.label_names)}.")
        model = build_detector(detector)
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as error:
        raise zoo.ModelUnavailable(f"Model {spec.name!r}: the weights do not fit {spec.arch!r} ({str(error).splitlines()[0]}).") from None
    return model


# --- prediction --------------------------------------------------------------------------------------------------

MIN_BOX_SIDE_PX = 8  # of the uploaded image
MIN_BOX_SIDE_SHARE = 0.02  # of the image's shorter side: 5 px of a 256 px film, 20 px of a 1024 px one
MAX_BOX_ASPECT = 6.0


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    score: float = 1.0

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1


@dataclass(frozen=True)
class DetectResult:
    model: str
    boxes: tuple[Box, ...]  # the uploaded image's pixels, best score first
    latency_ms: float
    warnings: tuple[str, ...] = ()
    crop: tuple[float, float, float, float] | None = None  # the lung crop, in the uploaded image's pixels
    preprocessed: np.ndarray | None = field(default=None, repr=False)  # uint8 HxW: what the network saw


def network_input(prepared: Prepared) -> torch.Tensor:
    """uint8 (1, H, W) to the float (3, H, W) the detector normalises itself."""
    return prepared.image.float().div_(255.0).expand(3, -1, -1)


def run_detector(module: FasterRCNN, prepared: list[Prepared], score_threshold: float, nms_iou: float) -> list[dict]:
    """Raw torchvision outputs with boxes moved back to each source image's pixels. torchvision applies the score
    threshold and the per-class NMS; they are module attributes, so callers hold the model's lock."""
    module.roi_heads.score_thresh, module.roi_heads.nms_thresh = float(score_threshold), float(nms_iou)
    with torch.inference_mode():
        outputs = module.eval()([network_input(p) for p in prepared])
    return [{**out, "boxes": p.to_source(out["boxes"])} for out, p in zip(outputs, prepared)]


def predict(xray: XRay, model: str | None = None, score_threshold: float = 0.3, nms_iou: float = 0.5,
            keep_preprocessed: bool = False) -> DetectResult:
    if not 0 <= score_threshold <= 1 or not 0 < nms_iou <= 1:
        raise ValueError(f"The score threshold must be in [0, 1] and the NMS IoU in (0, 1]; got {score_threshold} and {nms_iou}.")
    loaded = zoo.load(model or zoo.default("detect").name)
    detector = DetectorSpec.from_dict(loaded.config["detector"])
    start = time.perf_counter()
    prepared = prepare(xray.pixels, DetectPreprocess.from_options(loaded.options, detector.input_size))
    with loaded.lock:
        output = run_detector(loaded.module, [prepared], score_threshold, nms_iou)[0]
    latency = (time.perf_counter() - start) * 1000
    # the working pixels may be a downsampled copy of a very large upload: report in the upload's own pixels
    to_original = torch.tensor([xray.meta.width / xray.shape[1], xray.meta.height / xray.shape[0]] * 2)
    boxes = tuple(
        Box(*(round(v, 1) for v in (xyxy * to_original).tolist()), detector.label_names[int(label) - 1], round(float(score), 4))
        for xyxy, label, score in zip(output["boxes"], output["labels"], output["scores"])
    )
    crop = tuple(round(v, 1) for v in (torch.tensor(prepared.crop, dtype=torch.float32) * to_original).tolist())
    boxes, slivers = plausible_boxes(boxes, (xray.meta.width, xray.meta.height))
    notes = list(xray.warnings)
    if slivers:
        notes.append(f"{slivers} degenerate box{'es' if slivers > 1 else ''} (thinner than {MIN_BOX_SIDE_SHARE:.0%} of the image or "
                     f"{MIN_BOX_SIDE_PX} px, or longer than {MAX_BOX_ASPECT:g}:1: the clipped remains of proposals along the crop edge) not shown.")
    if loaded.options.get("demo"):
        notes.append(demo_warning(int(loaded.options.get("train_images", 16))))
    if not boxes:
        notes.append(f"No box scored {score_threshold:.2f} or more. Lower the score threshold to see weaker candidates.")
    preprocessed = prepared.image[0].numpy() if keep_preprocessed else None
    return DetectResult(loaded.spec.name, boxes, latency, tuple(notes), crop, preprocessed)


def plausible_boxes(boxes: tuple[Box, ...], image_size: tuple[int, int]) -> tuple[tuple[Box, ...], int]:
    """Drop slivers: Faster R-CNN clips proposals that overhang the lung crop to its edge, and what is left of them is
    a line of a few pixels along the border. No finding is that thin. Returns the kept boxes and how many were dropped."""
    min_side = max(MIN_BOX_SIDE_PX, MIN_BOX_SIDE_SHARE * min(image_size))
    kept = tuple(b for b in boxes if min(b.x1 - b.x0, b.y1 - b.y0) >= min_side
                 and max(b.x1 - b.x0, b.y1 - b.y0) <= MAX_BOX_ASPECT * min(b.x1 - b.x0, b.y1 - b.y0))
    return kept, len(boxes) - len(kept)


# --- ground truth and overlays --------------------------------------------------------------------------------------


def read_reference_boxes(source: str | Path | bytes, image_size: tuple[int, int]) -> list[Box]:
    """Ground-truth boxes from a CSV with x, y, width, height (pixels of the uploaded image, top-left origin) and an
    optional label column. Raises ValueError with a plain message."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error):
        raise ValueError("The boxes file is not a text CSV. Upload a CSV with columns x, y, width, height.") from None
    columns = {c.strip().lower() for c in (rows[0].keys() if rows else []) if c}
    if not rows or not {"x", "y", "width", "height"} <= columns:
        raise ValueError("The boxes CSV needs a header with x, y, width, height (pixels of the image) and at least one row.")
    width, height = image_size
    boxes = []
    for number, row in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
        except ValueError:
            raise ValueError(f"Line {number} of the boxes CSV has a value that is not a number.") from None
        if not (w > 0 and h > 0 and np.isfinite([x, y, w, h]).all()):
            raise ValueError(f"Line {number} of the boxes CSV has a box with no area (width and height must be positive).")
        if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
            raise ValueError(f"Line {number}: the box {x:g},{y:g} {w:g}x{h:g} lies outside the {width}x{height} image. "
                             "Give boxes in the uploaded image's pixels.")
        boxes.append(Box(x, y, x + w, y + h, row.get("label") or "ground truth"))
    return boxes


def best_ious(boxes: list[Box] | tuple[Box, ...], others: list[Box] | tuple[Box, ...]) -> list[float]:
    """For each box, its highest IoU with any of `others` (0 when there are none)."""
    if not boxes or not others:
        return [0.0] * len(boxes)
    ious = box_iou(torch.tensor([b.xyxy for b in boxes]), torch.tensor([b.xyxy for b in others]))
    return ious.max(dim=1).values.tolist()


def draw_boxes(pixels: np.ndarray, boxes: tuple[Box, ...] | list[Box], reference: list[Box] | None = None,
               crop: tuple[float, ...] | None = None, original_size: tuple[int, int] | None = None) -> np.ndarray:
    """Predicted boxes (the table's box number and score), ground truth and the lung crop over the X-ray, at display resolution, uint8 RGB.
    Coordinates are in the original image's pixels (`original_size` = its width, height)."""
    base = display_pixels(pixels)
    width, height = original_size or (pixels.shape[1], pixels.shape[0])
    scale = torch.tensor([base.shape[1] / width, base.shape[0] / height] * 2)
    canvas = torch.from_numpy(gray_to_rgb_uint8(base)).permute(2, 0, 1)
    line = max(2, round(max(base.shape) / 250))
    font = font_file()
    layers = [([crop] if crop else [], CROP_COLOUR, None, 1),
              ([b.xyxy for b in reference or []], REFERENCE_COLOUR, None, line),
              ([b.xyxy for b in boxes], BOX_COLOUR, [f"{i} · {b.score:.2f}" for i, b in enumerate(boxes, start=1)], line)]
    for coords, colour, labels, width_px in layers:
        if coords:
            canvas = draw_bounding_boxes(canvas, torch.tensor(coords, dtype=torch.float32) * scale, labels=labels,
                                         colors=colour, width=width_px, font=font, font_size=max(14, round(max(base.shape) / 28)) if font else None,
                                         label_colors="white", fill_labels=True)
    return canvas.permute(1, 2, 0).numpy().copy()
