"""Batch mode: one task over every image in a folder, one CSV row per file found. The last line is one JSON object.

    python -m cxr_demo.batch DIR --task classify --out results.csv [--model NAME] [--analyse-anyway]

Each file takes the app's own path: read_xray -> the shared intake (input check and lung mask) -> the task's predictor.
A file that cannot be read gets a row with the plain message the app would show; one bad file never stops the run.
A file the input check refuses gets `status=flagged` and no prediction, unless --analyse-anyway (then it stays flagged).
Only prediction figures and the check's verdict are written: never an image, never a DICOM header field.
The rows come from `cxr_demo.ui.batch_rows`, which the Classify tab's several-files panel shares.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cxr_demo import zoo
from cxr_demo.ui.batch_rows import TASKS, find_images, resolve_model, run_batch, summary, write_csv
from cxr_demo.ui.warmup import configure_threads


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="folder of images, searched recursively (PNG, JPG, BMP, TIFF, DICOM)")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--out", required=True, type=Path, help="the CSV to write")
    parser.add_argument("--model", help="a zoo model for the task (default: the zoo's default)")
    parser.add_argument("--analyse-anyway", action="store_true",
                        help="also predict the images the input check flags (their rows stay flagged)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    try:
        model = resolve_model(args.task, args.model)
    except (zoo.UnknownModel, zoo.ModelUnavailable, ValueError) as error:
        parser.error(str(error))
    configure_threads()
    start = time.perf_counter()
    rows = run_batch(find_images(args.dir), args.task, model, args.analyse_anyway, root=args.dir)
    write_csv(rows, args.out, args.task, model)
    result = summary(rows, args.out, args.task, model)
    print(f"batch {args.task} ({model}): {result['files']} files, {result['ok']} ok, {result['flagged']} flagged, "
          f"{result['errors']} errors in {time.perf_counter() - start:.1f} s -> {args.out}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
