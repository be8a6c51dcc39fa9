"""Everything that turns plain results into pictures. No model code, no Gradio."""
from __future__ import annotations

import functools
import textwrap

import cv2  # opencv-python-headless, which grad-cam already brings
import numpy as np
from PIL import Image
from scipy import ndimage

DISPLAY_MAX_SIDE = 768
DISPLAY_MIN_SIDE = 512  # a 224 px film drawn at its own size is a stamp in a 420 px panel, and its labels unreadable


def display_pixels(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE, min_side: int = DISPLAY_MIN_SIDE) -> np.ndarray:
    """Float [0, 1] pixels resized for the browser (longest side between `min_side` and `max_side`); the models never see this copy."""
    h, w = pixels.shape
    longest = max(h, w)
    if min_side <= longest <= max_side:
        return pixels
    scale = (max_side if longest > max_side else min_side) / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pixels = np.asarray(pixels, np.float32)
    factor = int(1 / scale)
    if factor >= 2:
        # area averaging by a whole factor does not alias and is fast; OpenCV's area resize by 4:3 took 3 of a classify click's ms
        pixels = cv2.resize(pixels, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    # what is left is under 2:1, where bilinear does not alias; it is smooth when enlarging a small film
    return cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR)


def gray_to_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.convertScaleAbs(np.clip(pixels, 0, 1), alpha=255), cv2.COLOR_GRAY2RGB)


def heatmap_overlay(pixels: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Jet-coloured heatmap blended over the X-ray, at display resolution, as uint8 RGB.
    The same colours as pytorch-grad-cam's show_cam_on_image, blended in uint8: a sixth of its time at 768 px."""
    base = display_pixels(pixels)
    cam = cv2.resize(np.asarray(heatmap, np.float32), base.shape[::-1], interpolation=cv2.INTER_LINEAR)
    colours = cv2.cvtColor(cv2.applyColorMap(cv2.convertScaleAbs(np.clip(cam, 0, 1), alpha=255), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return cv2.addWeighted(gray_to_rgb_uint8(base), 1.0 - opacity, colours, opacity, 0)


@functools.lru_cache(maxsize=1)
def font_file() -> str | None:
    """A legible TrueType font: matplotlib (which grad-cam brings) ships DejaVu. PIL's and torchvision's fallback is 6 px high."""
    import os

    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans-Bold.ttf")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=8)
def label_font(size: int):
    from PIL import ImageFont

    path = font_file()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def with_colour_scale(rgb: np.ndarray, low: str = "low", high: str = "high", title: str = "heatmap") -> np.ndarray:
    """The overlay with the jet colour scale drawn as a labelled strip under it: which colour means more."""
    return np.concatenate([rgb, colour_scale(rgb.shape[1], low, high, title)], axis=0)


@functools.lru_cache(maxsize=32)
def colour_scale(width: int, low: str, high: str, title: str) -> np.ndarray:
    """The labelled jet strip, kept: drawing its text took a millisecond of every click, and the titles repeat."""
    from PIL import ImageDraw

    strip_h = max(22, width // 22)
    ramp = cv2.applyColorMap(np.linspace(0, 255, width).astype(np.uint8)[None].repeat(strip_h, 0), cv2.COLORMAP_JET)
    strip = Image.fromarray(cv2.cvtColor(ramp, cv2.COLOR_BGR2RGB))
    draw, font = ImageDraw.Draw(strip), label_font(int(strip_h * 0.6))
    middle = strip_h // 2
    draw.text((6, middle), low, fill="white", font=font, anchor="lm")
    draw.text((width // 2, middle), title, fill="black", font=font, anchor="mm")
    draw.text((width - 6, middle), high, fill="white", font=font, anchor="rm")
    pixels = np.asarray(strip)
    pixels.flags.writeable = False  # shared by every caller
    return pixels


BOX_COLOUR = (40, 220, 90)


def outline_box(rgb: np.ndarray, box: tuple[float, float, float, float], colour=BOX_COLOUR) -> np.ndarray:
    """A dashed rectangle for a (top, left, bottom, right) box given as fractions of the image."""
    h, w = rgb.shape[:2]
    top, bottom = round(box[0] * (h - 1)), round(box[2] * (h - 1))
    left, right = round(box[1] * (w - 1)), round(box[3] * (w - 1))
    width, dash = max(2, round(max(h, w) / 250)), max(6, round(max(h, w) / 60))
    # numpy writes the dashes in one indexed assignment per side; PIL drew them one line call at a time (1 ms a click)
    along_x = np.arange(left, right + 1)
    along_x = along_x[(along_x - left) % (2 * dash) < dash]
    along_y = np.arange(top, bottom + 1)
    along_y = along_y[(along_y - top) % (2 * dash) < dash]
    picture, half = rgb.copy(), width // 2
    for y in (top, bottom):
        picture[max(0, y - half):y - half + width, along_x] = colour
    for x in (left, right):
        picture[along_y, max(0, x - half):x - half + width] = colour
    return picture


MASK_COLOUR = (0, 190, 255)
REFERENCE_COLOUR = (255, 210, 0)


def mask_overlay(pixels: np.ndarray, mask: np.ndarray, reference: np.ndarray | None = None, opacity: float = 0.35) -> np.ndarray:
    """Translucent mask with its contour over the X-ray (display resolution); a reference mask adds a second contour."""
    # PIL composites in C: a third of the time of float numpy blending at 768 px, which mattered for the 80 ms Segment budget
    base = Image.fromarray(gray_to_rgb_uint8(display_pixels(pixels)))
    predicted = _display_mask(mask, base.size)
    tinted = Image.blend(base, Image.new("RGB", base.size, MASK_COLOUR), float(np.clip(opacity, 0.0, 1.0)))
    base.paste(tinted, mask=predicted)
    base.paste(MASK_COLOUR, mask=_contour(predicted))
    if reference is not None:
        base.paste(REFERENCE_COLOUR, mask=_contour(_display_mask(reference, base.size)))
    return np.array(base)


def _display_mask(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A boolean mask as a 0/255 PIL mask of the display size (width, height)."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    if image.size == size:
        return image
    return image.resize(size, Image.NEAREST)


def _contour(mask: Image.Image, width: int = 2) -> Image.Image:
    # scipy's separable minimum filter: PIL's MinFilter is a per-pixel sort, 8x slower here
    pixels = np.asarray(mask)
    return Image.fromarray(pixels - ndimage.minimum_filter(pixels, size=2 * width + 1))


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str):
    """A confusion matrix as a matplotlib figure (rows: truth, columns: prediction)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=[label.replace(" ", "\n") for label in labels]).plot(
        ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(textwrap.fill(title, 48), fontsize=9)
    fig.tight_layout()
    return fig


def reliability_figure(bins: dict[str, list], title: str):
    """Reliability diagram: accuracy against confidence per bin, bar width by bin, the diagonal is perfect calibration."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    count = np.asarray(bins["count"])
    edges = np.linspace(0, 1, len(count) + 1)
    used = count > 0
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    ax.bar(edges[:-1][used], np.asarray(bins["accuracy"])[used], width=1 / len(count), align="edge", alpha=0.7, edgecolor="k", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.scatter(np.asarray(bins["confidence"])[used], np.asarray(bins["accuracy"])[used], s=12 + 60 * count[used] / count.max(), c="C1",
               zorder=3, label="mean confidence (size: images)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence of the top class", ylabel="accuracy")
    ax.set_title(textwrap.fill(title, 48), fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
