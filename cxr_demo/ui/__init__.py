"""Gradio Blocks app: one builder per tab, wiring only. Handlers live beside each builder and are plain functions."""
from __future__ import annotations

import gradio as gr

from cxr_demo import zoo
from cxr_demo.ui import cache_fix, classify_tab, compare_tab, detect_tab, segment_tab, zeroshot_tab
from cxr_demo.ui.common import disclaimer

TITLE = "cxr-demo: chest X-ray AI in the browser"
CSS = (".disclaimer blockquote {border-left: 4px solid #d97706; background: #fffbeb; padding: 6px 12px;}\n"
       # long cells (variants, commands) wrap inside a readable width instead of pushing the figures off-screen
       "#leaderboard th, #leaderboard td {max-width: 16em; white-space: normal; overflow-wrap: anywhere;}")

TABS = {"classify": classify_tab, "zeroshot": zeroshot_tab, "segment": segment_tab, "detect": detect_tab}
# each task's click as a plain function: the image first, every other input defaulted (the API's contract)
HANDLERS = {"classify": classify_tab.classify_image, "zeroshot": zeroshot_tab.zeroshot_image, "segment": segment_tab.segment_image,
            "detect": detect_tab.detect_image}


def build_demo() -> gr.Blocks:
    cache_fix.install()
    # Gradio keeps every served image in its temp folder; an afternoon of clicks must not fill a Space's disk
    with gr.Blocks(title=TITLE, delete_cache=(600, 1800)) as demo:
        gr.Markdown(f"# {TITLE}\nUpload a frontal chest X-ray and see what small, open models make of it, and why.")
        disclaimer()
        with gr.Tabs():
            for task in zoo.ENDPOINTS:
                # Classify is the landing tab and says itself when the zoo has no classifier; the others show when it has a model
                if task == "classify" or any(zoo.names(kind) for kind in zoo.TASKS[task].kinds):
                    with gr.Tab(zoo.TASKS[task].title, id=task):
                        TABS[task].build()
            with gr.Tab("Compare", id="compare"):
                compare_tab.build()
    return demo
