"""Latency, start-up and memory benchmark. Not a test: it prints figures. The last line is one JSON object.

    python -m cxr_demo.bench --json
    python -m cxr_demo.bench --profile --no-startup   # where each task's time goes (cProfile, top functions)

Each task is timed server-side through its tab handler (decode, model, heatmap/overlay), as a user's click is.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import time
from functools import partial
from pathlib import Path

import numpy as np

from cxr_demo import zoo
from cxr_demo.io import examples
from cxr_demo.serve import REPO_ROOT, AppDidNotStart, running_app
from cxr_demo.ui.warmup import configure_threads

TARGETS_MS = {name: task.target_ms for name, task in zoo.TASKS.items() if task.target_ms}


def time_calls(fn, repeats: int, warmup: int = 3) -> dict:
    times = timed_in_turns({"call": fn}, repeats, warmup)["call"]
    return {"p50_ms": round(float(np.percentile(times, 50)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1), "n": repeats}


def profile_calls(fn, repeats: int, top: int = 12) -> str:
    """The functions that take the most time per call, cumulative, over `repeats` warm calls."""
    fn()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        fn()
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(r"cxr_demo|torch/nn/modules/(conv|linear|module)|pytorch_grad_cam|PIL|pydicom|scipy", top)
    return stream.getvalue()


def uncached(handler):
    """A click on a new image: the shared intake (input check and lung mask) is recomputed, not taken from the cache."""
    from cxr_demo.intake import forget

    def call():
        forget()
        return handler()
    return call


def task_handlers(image: str) -> dict:
    """One callable per task that has a default model in the zoo; each pays for the shared intake stage."""
    from cxr_demo.ui import HANDLERS

    # with their defaults: GradCAM for Classify; the zero-shot text embeddings are cached after the first call
    return {task: uncached(partial(HANDLERS[task], image)) for task in zoo.ENDPOINTS if zoo.names(task)}


def timed_in_turns(fns: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each callable, timed in turns (a, b, a, b, ...) after `warmup` calls of each: on a shared
    machine whose speed drifts from minute to minute, every callable sees the same drift, so their ratio holds where
    back-to-back timings do not."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def interleaved_p50_ms(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """The p50 of each callable, timed in turns (`timed_in_turns`)."""
    return {name: round(float(np.percentile(t, 50)), 1) for name, t in timed_in_turns(fns, repeats, warmup).items()}


def densenet_gradcam():
    """A DenseNet-121 with GradCAM at 224 px (torchxrayvision's default architecture), to time in the same run: the ratio
    to it is comparable across machines where absolute milliseconds are not."""
    import timm
    import torch

    from cxr_demo.tasks.cam import class_activation_map

    model = timm.create_model("densenet121", pretrained=False, num_classes=3, in_chans=1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    return lambda: class_activation_map(model, x, "GradCAM")


def app_ready_seconds() -> float:
    """Seconds from `python app.py` to the server answering HTTP on localhost."""
    try:
        with running_app() as app:
            return app.ready_s
    except AppDidNotStart:
        return float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--image", help="image to time (default: the example DICOM, a 1024x1024 JPEG-baseline CR)")
    parser.add_argument("--no-startup", action="store_true", help="skip the app start-up measurement")
    parser.add_argument("--save", action="store_true", help="also write results/bench.json (the leaderboard's latency column)")
    parser.add_argument("--profile", action="store_true", help="print each task's most expensive functions instead of timing")
    parser.add_argument("--json", action="store_true", help="end with one JSON line (always printed; kept for scripts)")
    args = parser.parse_args(argv)
    configure_threads()
    image = args.image or next((p for p in examples.paths() if p.endswith(".dcm")), examples.paths()[0])
    if args.profile:
        for task, fn in task_handlers(image).items():
            print(f"=== {task} ({zoo.default(task).name}), {args.repeats} calls ===\n{profile_calls(fn, args.repeats)}")
        return {}
    ready = None if args.no_startup else app_ready_seconds()
    tasks, handlers = {}, task_handlers(image)
    for task, fn in handlers.items():
        tasks[task] = {"model": zoo.default(task).name, **time_calls(fn, args.repeats)}
        status = "meets" if tasks[task]["p50_ms"] <= TARGETS_MS[task] else "MISSES"
        print(f"{task:<9} p50 {tasks[task]['p50_ms']:7.1f} ms  p95 {tasks[task]['p95_ms']:7.1f} ms  ({status} the {TARGETS_MS[task]} ms target)")
    if tasks.get("classify"):
        paired = interleaved_p50_ms({"classify": handlers["classify"], "densenet": densenet_gradcam()}, max(5, args.repeats))
        ratio = round(paired["classify"] / paired["densenet"], 3)
        tasks["classify"].update(densenet121_gradcam_ms=paired["densenet"], ratio_to_densenet121=ratio, classify_beside_densenet_ms=paired["classify"])
        print(f"DenseNet-121 + GradCAM at 224 px: {paired['densenet']:.1f} ms, classify {paired['classify']:.1f} ms timed in turns with it; "
              f"classify / DenseNet = {ratio:.2f} (target ≤ 0.75)")
    for task in TARGETS_MS:
        tasks.setdefault(task, {"p50_ms": None, "p95_ms": None, "skipped": f"no {task} model in the zoo yet"})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"app ready in {ready} s (target 20 s); peak RSS {peak_mb:.0f} MB with {zoo.registry().loaded_names()} loaded")
    result = {"ready_s": ready, "peak_rss_mb": round(peak_mb, 1), "tasks": tasks, "image": Path(image).name,
              "threads": int(__import__("torch").get_num_threads()), "cpu_count": os.cpu_count()}
    if args.save:
        (REPO_ROOT / "results").mkdir(exist_ok=True)
        (REPO_ROOT / "results" / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
