"""Entry point for `python app.py` and Hugging Face Spaces."""
import logging
import os

# Gradio's queue recomputes a pandas summary of up to 10,000 past events after every event (its monitoring page): in a
# classroom that was 13% of the server's CPU, on the event loop's side. Once per 100 events keeps the page current enough.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")

from cxr_demo.ui import CSS, build_demo
from cxr_demo.ui.warmup import warm_up_in_background
from cxr_demo.zoo.runtime import limit_malloc_arenas

limit_malloc_arenas()  # before any model or worker thread allocates
demo = build_demo()

if __name__ == "__main__":
    # one line per refused upload or user mistake in the host's log; tracebacks only for real failures
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("cxr_demo").addHandler(handler)
    logging.getLogger("cxr_demo").setLevel(logging.INFO)
    warm_up_in_background()
    # a bounded queue: past 64 waiting clicks (two classrooms of 30, one click in flight each) a click is told the app is
    # busy and to try again, instead of waiting minutes behind everyone else
    demo.queue(default_concurrency_limit=2, max_size=64).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        css=CSS,
        max_file_size="200mb",  # read_xray refuses more anyway; Gradio then refuses it before it reaches the disk
    )
