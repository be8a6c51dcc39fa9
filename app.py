"""Entry point for `python app.py` and Hugging Face Spaces."""
import os

from cxr_demo.ui import CSS, build_demo
from cxr_demo.warmup import warm_up_in_background

demo = build_demo()

if __name__ == "__main__":
    warm_up_in_background()
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        css=CSS,
    )
