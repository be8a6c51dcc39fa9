"""Load the default models after the server starts, so the first click does not pay for it."""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxr_demo import zoo
from cxr_demo.io import examples, read_xray

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
    """Each tab's click once, on a throw-away film (the first example, mirrored; a grey ramp without examples), so that the
    first real click does not pay for lazy set-up: oneDNN kernels, ONNX Runtime's first run, GradCAM's first backward
    pass, fonts. Under a classroom's first burst that set-up was most of the slowest answers. Nothing about it is kept."""
    from cxr_demo.intake import forget
    from cxr_demo.ui import HANDLERS

    with tempfile.TemporaryDirectory() as folder:
        film = throwaway_film(Path(folder))
        try:
            for task in tasks:
                if task in HANDLERS and zoo.names(task):
                    HANDLERS[task](film, analyse_anyway=True)  # a mirrored film is refused otherwise
        except Exception as error:  # noqa: BLE001 - priming is an optimisation; the app must start whatever it meets
            log.warning("priming the models failed (%s); the first clicks will be slower", type(error).__name__)
        finally:
            forget()


def throwaway_film(folder: Path) -> str:
    paths = examples.paths()
    gradient = np.tile(np.linspace(0.2, 0.8, 256, dtype=np.float32)[:, None], (1, 256))  # a flat image is refused on upload
    pixels = read_xray(paths[0]).pixels[:, ::-1] if paths else gradient
    path = folder / "throwaway.png"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return str(path)


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
