"""Load the default models after the server starts, so the first click does not pay for it."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import torch

from cxr_demo import zoo
from cxr_demo.io import XRay, examples, read_xray
from cxr_demo.io.xray import SafeMeta

log = logging.getLogger("cxr_demo")
MODELS_LOADED = "default models loaded"  # the log line the load test waits for before it starts its clock


def configure_threads() -> None:
    # Spaces' free tier and our CI have 2 cores; more threads than cores only thrash.
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))


def warm_up(tasks: tuple[str, ...] = zoo.ENDPOINTS) -> list[str]:
    """Load each task's default model (the tab a user opens first goes first) and embed the default prompts."""
    loaded = []
    for task in tasks:
        if not zoo.names(task):
            continue
        try:
            model = zoo.load(zoo.default(task).name)
        except (zoo.ModelUnavailable, zoo.UnknownModel) as error:
            log.warning("default %s model not loaded: %s", task, error)
            continue
        loaded.append(model.spec.name)
        if task == "zeroshot":
            from cxr_demo.tasks import zeroshot

            zeroshot.class_embeddings(model, zeroshot.PRESETS["clinical"])
    return loaded


def prime(tasks: tuple[str, ...] = zoo.ENDPOINTS) -> None:
    """One prediction per task's default model on a throw-away film (an example, mirrored, or flat grey without examples),
    so that the first real click does not pay for lazy set-up: oneDNN kernels, ONNX Runtime's first run, GradCAM's first
    backward pass. Under a classroom's first burst that set-up was most of the slowest answers."""
    from cxr_demo.intake import forget, intake
    from cxr_demo.tasks import classify, detect, segment, zeroshot

    film = throwaway_film()
    predictors = {"classify": lambda: classify.predict(film, method="GradCAM"), "segment": lambda: segment.predict(film),
                  "detect": lambda: detect.predict(film), "zeroshot": lambda: zeroshot.predict(film)}
    try:
        intake(film)
        for task in tasks:
            if task in predictors and zoo.names(task):
                predictors[task]()
    except Exception as error:  # noqa: BLE001 - priming is an optimisation; the app must start whatever it meets
        log.warning("priming the models failed (%s: %s); the first clicks will be slower", type(error).__name__, error)
    finally:
        forget()


def throwaway_film() -> XRay:
    paths = examples.paths()
    if paths:
        real = read_xray(paths[0])
        return XRay(np.ascontiguousarray(real.pixels[:, ::-1]), real.meta)
    return XRay(np.full((256, 256), 0.5, np.float32), SafeMeta("png", 256, 256))


def warm_up_and_say_so() -> None:
    start = time.perf_counter()
    loaded = warm_up()
    prime()
    log.info("%s in %.1f s: %s", MODELS_LOADED, time.perf_counter() - start, ", ".join(loaded))


def warm_up_in_background() -> threading.Thread:
    configure_threads()
    thread = threading.Thread(target=warm_up_and_say_so, name="cxr-demo-warmup", daemon=True)
    thread.start()
    return thread
