"""The zoo's own measured figures, in the seeds' columns, with where each came from. Read-only: nothing is computed here.

Sources: every zoo model's `metrics.json` (written by `train/`), `results/seed_experiments.json` (`train.experiments`),
the architecture tables `results/classify_table.json` and `results/segment_table.json` (`train.tables`),
and `results/bench.json` (`cxr_demo.bench --save`) for CPU latency.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cxr_demo import zoo

RESULTS_DIR = zoo.REPO_ROOT / "results"
# the kinds of model a user picks in a tab; the input check runs inside every tab instead
KINDS = tuple(dict.fromkeys(kind for task in zoo.TASKS.values() if task.endpoint for kind in task.kinds))
HEADERS = {"f1": "macro-F1", "precision": "precision", "recall": "recall", "accuracy": "accuracy", "external_accuracy": "other-hospital accuracy",
           "external_n": "other-hospital n", "worst_shift_accuracy": "accuracy, worst simulated hospital",
           "lungs_removed_accuracy": "accuracy, lungs removed", "heatmap_in_lungs": "heatmap in lungs",
           "ece": "ECE", "dice": "Dice", "iou": "IoU", "external_dice": "other-hospital Dice", "map50": "mAP@0.5", "map": "mAP@[.5:.95]"}
# every task's metric columns from the task table, in its order: a new task's figures get their columns here
FIGURES = tuple(dict.fromkeys(column for task in zoo.TASKS.values() for column in task.metric_columns))
COLUMNS = ("model", "task", "variant", *[HEADERS[f] for f in FIGURES], "min/epoch", "CPU p50 ms", "data / split", "command")
SORTABLE = COLUMNS[3:-2]

# what fits a desktop screen and answers "which model, and is it right for the right reasons"; the rest can be added
DEFAULT_COLUMNS = ("model", "task", "macro-F1", "other-hospital accuracy", "accuracy, worst simulated hospital", "accuracy, lungs removed",
                   "heatmap in lungs", "Dice", "other-hospital Dice", "mAP@0.5", "CPU p50 ms", "variant")


def shown_columns(chosen: list[str] | None, sort_by: str) -> list[str]:
    """The columns to show: the model, then the sort column (never off-screen), then the chosen ones (the defaults when none)
    in the table's order."""
    wanted = set(chosen or DEFAULT_COLUMNS) | {"model", sort_by}
    unknown = wanted - set(COLUMNS)
    if unknown:
        raise ValueError(f"Unknown leaderboard column(s) {', '.join(sorted(unknown))}; choose from {', '.join(COLUMNS)}.")
    rest = [c for c in COLUMNS if c in wanted and c not in ("model", sort_by)]
    return list(dict.fromkeys(["model", sort_by, *rest]))


@dataclass(frozen=True)
class Entry:
    model: str
    task: str
    variant: str = ""
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    accuracy: float | None = None
    external_accuracy: float | None = None
    external_n: int | None = None
    worst_shift_accuracy: float | None = None  # the lowest accuracy of `train.evaluate --shift all` (train/site_shift.py)
    lungs_removed_accuracy: float | None = None
    heatmap_in_lungs: float | None = None
    ece: float | None = None
    dice: float | None = None
    iou: float | None = None
    external_dice: float | None = None
    map50: float | None = None
    map: float | None = None
    minutes_per_epoch: float | None = None
    latency_ms: float | None = None
    data: str = ""
    command: str = ""
    labels: tuple[str, ...] = ()
    confusion: list | None = field(default=None, repr=False)
    reliability: dict | None = field(default=None, repr=False)

    def row(self) -> list:
        figure = lambda v: v if v is None or isinstance(v, int) else round(float(v), 4)  # noqa: E731
        return [self.model, self.task, self.variant, *[figure(getattr(self, f)) for f in FIGURES], figure(self.minutes_per_epoch),
                None if self.latency_ms is None else round(self.latency_ms, 1), self.data, self.command]


def train_command(kind: str, config: dict) -> str:
    """The training command that reproduces a checkpoint, from the config it recorded."""
    flags = []
    for key, value in config.items():
        if value in (None, False, [], "") or key in ("out", "runs", "threads"):
            continue
        for item in value if isinstance(value, list) else [value]:
            text = str(item)
            flags.append(f"--{key.replace('_', '-')} " + (f'"{text}"' if " " in text else text))
    return f"python -m {zoo.KINDS[kind]} " + " ".join(flags)


def _classification(report: dict) -> dict:
    return dict(f1=report.get("macro_f1"), precision=report.get("macro_precision"), recall=report.get("macro_recall"),
                accuracy=report.get("accuracy"), ece=report.get("ece"), confusion=report.get("confusion_matrix"),
                reliability=report.get("reliability"), labels=tuple(report.get("per_class", {})))


def _provenance(config: dict, metrics: dict) -> str:
    """Where the figures come from: the training sources (by name), the test split, and the set behind the external Dice."""
    data = config.get("data") or [*([config["cls_data"]] if config.get("cls_data") else []), *config.get("seg_data", [])]
    sources = [data] if isinstance(data, str) else list(data)
    text = ", ".join(Path(str(source).split("::")[0]).name for source in sources)
    text = f"{text}, test split" if text else "test split"
    external = metrics.get("external") or {}
    if external and metrics.get("task") in ("segment", "multitask"):
        spec, figures = next(iter(external.items()))
        text += f"; external Dice on {Path(spec.split('::')[0]).name} (n={figures.get('n')})"
    cv = metrics.get("cross_validation")
    if cv:
        text += f"; {cv['k']}-fold mean mAP@0.5 {cv['mean_map50']:.3f} ± {cv['std_map50']:.3f} over {cv['n']} images"
    return text


def _external_dice(metrics: dict) -> float | None:
    external = metrics.get("external") or {}
    return next((v["dice"] for v in external.values()), None)


def _shortcut(metrics: dict) -> dict:
    """The audit's figures (`python -m train.audit --write`): other hospitals, the worst simulated one, lungs removed, heatmap
    inside the lungs; for a checkpoint shipped from the architecture table without an audit, the table's own measurement of them."""
    audit = metrics.get("audit")
    if not audit:
        return {key: metrics["table"][key] for key in SHORTCUT_KEYS} if metrics.get("table") else {}
    shifts = audit.get("site_shift") or {}
    return dict(external_accuracy=audit["external"].get("accuracy"), external_n=audit["external"].get("n"),
                worst_shift_accuracy=shifts.get(shifts.get("worst")),
                lungs_removed_accuracy=audit["lungs_removed"].get("accuracy"), heatmap_in_lungs=audit["test"].get("heatmap_in_lungs"))


def entries_for(spec: zoo.ModelSpec, metrics: dict, latency: dict[str, float]) -> list[Entry]:
    test = metrics.get("test", {})
    config = metrics.get("train_config", {})
    common = dict(model=spec.name, task=spec.task, minutes_per_epoch=metrics.get("minutes_per_epoch"), latency_ms=latency.get(spec.name),
                  data=_provenance(config, metrics),
                  command=train_command(spec.task, config) if config else "")
    if spec.task not in KINDS:  # the input check classifies no findings: its figures are in its card and the README
        return []
    if spec.task == "zeroshot":  # train.audit scores a zero-shot model with its clinical prompts
        return [Entry(**common, variant=f"prompts: {preset}", **_classification(report), **(_shortcut(metrics) if preset == "clinical" else {}))
                for preset, report in test.items()]
    if spec.task == "segment":
        return [Entry(**common, dice=test.get("dice"), iou=test.get("iou"), external_dice=_external_dice(metrics))]
    if spec.task == "detect":
        return [Entry(**common, map50=test.get("map50"), map=test.get("map"))]
    extra = dict(dice=test.get("dice"), iou=test.get("iou"), external_dice=_external_dice(metrics)) if spec.task == "multitask" else {}
    return [Entry(**common, **_classification(test), **extra, **_shortcut(metrics))]


def experiment_entries(path: Path = RESULTS_DIR / "seed_experiments.json") -> list[Entry]:
    if not path.is_file():
        return []
    rows = json.loads(path.read_text()).get("experiments", [])
    return [Entry(model=row["name"], task="classify (seed experiment)", variant=row["experiment"], f1=row["macro_f1"],
                  precision=row["macro_precision"], recall=row["macro_recall"], accuracy=row["accuracy"], ece=row["ece"],
                  minutes_per_epoch=row["minutes_per_epoch"], data=row["data"], command=row["command"]) for row in rows]


SHORTCUT_KEYS = ("external_accuracy", "external_n", "lungs_removed_accuracy", "heatmap_in_lungs")


def architecture_table_entries(results: Path = RESULTS_DIR) -> list[Entry]:
    """The rows of `python -m train.tables`; a classifier shipped to the zoo shows as itself (from its metrics.json) instead."""
    in_zoo = set(zoo.names())
    found = []
    for path, task in ((results / "classify_table.json", "classify"), (results / "segment_table.json", "segment")):
        rows = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
        found += [_table_entry(row, task) for row in rows if row["name"] not in in_zoo or task == "segment"]
    return found


def _table_entry(row: dict, task: str) -> Entry:
    # a segmenter row can share its name with the zoo's (longer-trained) model: the table's own run is marked as such
    name = f"{row['name']} (table run)" if task == "segment" else row["name"]
    common = dict(model=name, task=f"{task} (architecture table)", minutes_per_epoch=row["minutes_per_epoch"], command=row["command"])
    if task == "segment":
        return Entry(**common, variant=f"{row['arch']}, MobileNetV2 ImageNet encoder, {row['epochs']} epochs", dice=row["shenzhen_dice"],
                     iou=row["shenzhen_iou"], external_dice=row["covid_qu_ex_dice"], latency_ms=row["latency_ms"],
                     data=f"Shenzhen test split (n={row['shenzhen_n']}); external Dice on held-out COVID-QU-Ex (n={row['covid_qu_ex_n']}); "
                          "CPU ms: one 256 px forward pass")
    return Entry(**common, variant=f"{row['family']} {row['arch']}, {row['init']} init, {row['epochs']} epochs", f1=row["macro_f1"],
                 precision=row["macro_precision"], recall=row["macro_recall"], accuracy=row["accuracy"], ece=row["ece"],
                 latency_ms=row["latency_ms_with_heatmap"], **{key: row[key] for key in SHORTCUT_KEYS},
                 data=f"cxr-3class lung crops, test split (n={row['n']}); CPU ms: the classifier with GradCAM, intake excluded")


def latencies(path: Path = RESULTS_DIR / "bench.json") -> dict[str, float]:
    """Model name -> p50 ms of its whole request, from the last saved bench run."""
    if not path.is_file():
        return {}
    tasks = json.loads(path.read_text()).get("tasks", {})
    return {t["model"]: t["p50_ms"] for t in tasks.values() if t.get("model") and t.get("p50_ms") is not None}


def entries() -> list[Entry]:
    latency = latencies()
    found = []
    for spec in zoo.registry().specs():
        metrics = zoo.metrics(spec.name)
        if metrics:
            found.extend(entries_for(spec, metrics, latency))
    return found + experiment_entries() + architecture_table_entries()


LOWER_IS_BETTER = {"ECE", "min/epoch", "CPU p50 ms", "accuracy, lungs removed"}


def table(task: str | None = None, sort_by: str = "macro-F1") -> list[list]:
    """Rows for the leaderboard, best first by `sort_by` (missing figures last)."""
    if sort_by not in COLUMNS:
        raise ValueError(f"Cannot sort by {sort_by!r}; choose one of {', '.join(COLUMNS)}.")
    rows = [e.row() for e in entries() if task in (None, "", "all") or e.task.startswith(task)]
    column = COLUMNS.index(sort_by)
    sign = 1 if sort_by in LOWER_IS_BETTER else -1

    def key(row):
        value = row[column]
        return (value is None, sign * value if isinstance(value, (int, float)) else 0, str(value))
    return sorted(rows, key=key)
