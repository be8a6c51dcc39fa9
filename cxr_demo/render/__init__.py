"""Stage 4, results -> pictures: overlays, boxes and figures as uint8 RGB arrays or matplotlib figures."""
from cxr_demo.render.overlays import (confusion_figure, display_pixels, font_file, gray_to_rgb_uint8, heatmap_overlay, mask_overlay,
                                      outline_box, reliability_figure, with_colour_scale)

__all__ = ["confusion_figure", "display_pixels", "font_file", "gray_to_rgb_uint8", "heatmap_overlay", "mask_overlay", "outline_box",
           "reliability_figure", "with_colour_scale"]
