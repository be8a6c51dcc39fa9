"""Load the default models after the server starts, so the first click does not pay for it."""
from __future__ import annotations

import logging
import threading

import torch

from cxr_demo import zoo

log = logging.getLogger("cxr_demo")


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


def warm_up_in_background() -> threading.Thread:
    configure_threads()
    thread = threading.Thread(target=warm_up, name="cxr-demo-warmup", daemon=True)
    thread.start()
    return thread
