"""The task table: the one place that says what each task of the app is.

A *task* is what a user asks for (a tab, an API endpoint, `train.evaluate --task`); a *kind* is the `task` field of a zoo
model. A multi-task U-Net is one kind that serves two tasks. Adding a task means one entry here plus its own modules.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    title: str  # the tab's title
    kinds: dict[str, str]  # zoo kind -> the module that trains it (`python -m <module>`)
    metric_columns: tuple[str, ...]  # the leaderboard columns that score this task, in the seeds' order
    labels_from: str  # where the class names come from: always the model, never the UI
    compare_with: tuple[str, ...] = ()  # further kinds that stand side by side with it in Compare
    endpoint: bool = True  # a tab and an API endpoint of its own (the input check runs inside every other task)
    compared: bool = True  # a choice in the Compare tab (zero-shot models are compared as classifiers instead)
    target_ms: int | None = None  # MISSION.md's CPU latency target per click, which `cxr_demo.bench` reports against

    @property
    def compare_kinds(self) -> tuple[str, ...]:
        return (*self.kinds, *self.compare_with)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("classify", "Classify", {"classify": "train.classify", "multitask": "train.multitask"},
         ("f1", "precision", "recall", "accuracy", "external_accuracy", "external_n", "worst_shift_accuracy", "lungs_removed_accuracy",
          "heatmap_in_lungs", "ece"),
         "config.json label_names (checked against zoo.toml labels)", compare_with=("zeroshot",), target_ms=100),
    Task("zeroshot", "CLIP prompt playground", {"zeroshot": "train.clip"}, ("f1", "precision", "recall", "accuracy", "ece"),
         "config.json label_names, else zoo.toml labels: the classes its prompts must describe", compared=False, target_ms=60),
    Task("segment", "Segment", {"segment": "train.segment", "multitask": "train.multitask"}, ("dice", "iou", "external_dice"),
         "config.json label_names (the mask's class)", target_ms=80),
    Task("detect", "Detect", {"detect": "train.detect"}, ("map50", "map"), "config.json detector.label_names", target_ms=600),
    Task("check", "Input check", {"check": "train.check"}, ("accuracy",), "config.json label_names (upright, rotated, ..., not a CXR)", endpoint=False, compared=False),
)}

KINDS: dict[str, str] = {kind: module for task in TASKS.values() for kind, module in task.kinds.items()}
ENDPOINTS: tuple[str, ...] = tuple(name for name, task in TASKS.items() if task.endpoint)


def tasks_served_by(kind: str) -> list[str]:
    return [name for name, task in TASKS.items() if kind in task.kinds]
