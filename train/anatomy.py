"""How often a lung model's raw mask holds more than the two lungs (a gastric bubble, a speck), on real films from other
hospitals, and how often the anatomy cleanup in `cxr_demo.intake.lungs.two_largest` had to drop a lung-sized second component.

    python -m train.anatomy --model lung-unet-mobilenetv2

Prints one JSON object. Unreadable files are skipped and counted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from cxr_demo import zoo
from cxr_demo.intake.lungs import run_segmenter, two_largest
from cxr_demo.io import InvalidImage, read_xray
from train.audit import SHARED
from train.cli import parse_config
from train.evaluate import image_paths

FRONTAL_FILMS = ("lung-masks/shenzhen/images", "covid-qu-ex-sample/Test/COVID-19/images", "covid-qu-ex-sample/Test/Non-COVID/images",
                 "covid-qu-ex-sample/Test/Normal/images", "rsna-opacity-boxes/images", "siim-pneumothorax/dicom",
                 "dicom/nih_*.dcm", "dicom/siim_*.dcm", "tbx11k-boxes/imgs/health")
EXTRA_COMPONENT = 0.005  # of the image: anything this big beyond the two lungs would have changed the lung area


def count(model: str) -> dict:
    loaded = zoo.load(model)
    films = [p for pattern in FRONTAL_FILMS for match in sorted(SHARED.glob(pattern))
             for p in (image_paths(match) if match.is_dir() else [match])]
    seen = extra = dropped = unreadable = 0
    for path in films:
        try:
            xray = read_xray(path)
        except InvalidImage:
            unreadable += 1
            continue
        seen += 1
        raw = run_segmenter(xray.pixels, loaded)[0] > float(loaded.options.get("threshold", 0.5))
        labels, _ = ndimage.label(raw)
        sizes = np.bincount(labels.ravel())[1:]
        extra += int((sizes >= EXTRA_COMPONENT * raw.size).sum() > 2)
        order = np.argsort(sizes)[::-1]
        kept = two_largest(raw)[0]
        dropped += int(len(order) >= 2 and sizes[order[1]] >= 0.15 * sizes[order[0]] and not kept[labels == order[1] + 1].any())
    return {"model": model, "films": seen, "unreadable": unreadable, "with_a_third_component": extra,
            "lung_sized_second_component_dropped": dropped}


@dataclass
class AnatomyConfig:
    model: str | None = field(default=None, metadata={"help": "a segment or multitask zoo model (default: the zoo's lung model)"})


def main(argv=None) -> dict:
    args = parse_config(AnatomyConfig, argv, __doc__)
    result = count(args.model or zoo.default("segment").name)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
