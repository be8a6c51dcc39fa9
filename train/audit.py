"""The figures that say whether a classifier is right for the right reasons, written into its metrics.json.

    python -m train.audit --model cxr-lungcrop-effnet-lite0 --write

- the held-out test split as usual, plus the share of GradCAM mass inside the lung mask;
- the same split with the lungs blanked out (chance is 1/3: anything well above it is read from outside the lungs), with
  the median grey the figure is quoted for and with every other blank (`BLANK_FILLS`), which a model may not have seen;
- the same split changed as another hospital would change it (`train.site_shift`): the accuracy under each shift;
- every external set in ../shared/data that carries one of the model's labels (other hospitals, never trained on), with n;
- adult films from other hospitals with other findings (TB, pneumonia, pneumothorax): the share called "Viral Pneumonia",
  which in cxr-3class means "a young child from Guangzhou".

Every image goes through `train.evaluate`'s path: the app's reader, input check, lung mask and crop.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr_demo import zoo
from cxr_demo.intake.lungs import BLANK_FILLS
from train.cli import parse_config
from train.data import SHARED
from train.evaluate import evaluate_classifier, evaluate_shifts, image_paths, run_classifier

# other hospitals, by the label the files carry; none of these was used to train a classifier
EXTERNAL_LABELLED = {
    "COVID": ["covid-qu-ex-sample/Test/COVID-19/images/*.png"],
    "Normal": ["covid-qu-ex-sample/Test/Normal/images/*.png", "tbx11k-boxes/imgs/health/*.png", "dicom/nih_*.dcm"],
}
ADULT_OTHER_FINDINGS = {
    "Shenzhen (TB)": "lung-masks/shenzhen/images",
    "RSNA (lung opacity)": "rsna-opacity-boxes/images",
    "SIIM-ACR (pneumothorax or none)": "siim-pneumothorax/dicom",
}
KEYS = ("accuracy", "macro_f1", "n", "flagged", "heatmap_in_lungs", "ece")


def external_folder(root: Path, shared: Path, labels: list[str]) -> Path:
    """The external labelled films laid out as <Class>/images/ (symlinks), for `evaluate_classifier`."""
    for label, patterns in EXTERNAL_LABELLED.items():
        if label not in labels:
            continue
        folder = root / label / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for pattern in patterns:
            for path in sorted(shared.glob(pattern)):
                (folder / f"{path.parent.parent.name}-{path.name}".replace(" ", "_")).symlink_to(path.resolve())
    return root


def viral_pneumonia_share(model: str, folder: Path) -> dict:
    loaded = zoo.load(model)
    labels = list(loaded.config.get("label_names") or loaded.spec.labels)
    seen = run_classifier(model, image_paths(folder))
    predicted = [labels[int(np.argmax(logits))] for logits in seen.logits]
    return {"n": len(predicted), "called_viral_pneumonia": float(np.mean([p == "Viral Pneumonia" for p in predicted])) if predicted else 0.0}


def audit(model: str, shared: Path = SHARED) -> dict:
    cxr3 = shared / "cxr-3class"
    test = evaluate_classifier(model, cxr3, "test", 0, cam=True)
    removed = evaluate_classifier(model, cxr3, "test", 0, lungs_removed=True)
    by_blank = {fill: removed["accuracy"] if fill == "median" else evaluate_classifier(model, cxr3, "test", 0, True, fill=fill)["accuracy"]
                for fill in BLANK_FILLS}
    shifted = evaluate_shifts(model, cxr3, "test", 0, unchanged=test)
    with tempfile.TemporaryDirectory() as tmp:
        labels = list(zoo.load(model).config.get("label_names") or zoo.get(model).labels)
        external = evaluate_classifier(model, external_folder(Path(tmp), shared, labels), "all", 0)
        external_removed = evaluate_classifier(model, Path(tmp), "all", 0, lungs_removed=True)
    return {
        "segmenter": zoo.default("segment").name,  # its lung mask makes the crop, the blanking and the heatmap's lung share
        "test": {k: test.get(k) for k in KEYS},
        "lungs_removed": {k: removed.get(k) for k in ("accuracy", "macro_f1", "n")},
        "external": {"data": "COVID-QU-Ex COVID-19 and Normal, TBX11K healthy, NIH No Finding (other hospitals)",
                     **{k: external.get(k) for k in KEYS}, "per_class": external.get("per_class"),
                     "confusion_matrix": external.get("confusion_matrix"),
                     "lungs_removed_accuracy": external_removed.get("accuracy")},
        "adult_other_findings": {name: viral_pneumonia_share(model, shared / folder) for name, folder in ADULT_OTHER_FINDINGS.items()},
        "lungs_removed_by_blank": {"n": removed["n"], **by_blank},
        "site_shift": {"n": test["n"], **{name: row["accuracy"] for name, row in shifted["by_shift"].items()},
                       "worst": shifted["worst_shift"]},
    }


CARD_MARK = "## Right for the right reasons"


def with_interval(accuracy: float, n: int) -> str:
    """The accuracy with its 95% Wilson interval: at n=535, 0.454 could as well be 0.41 or 0.50."""
    from scipy.stats import binomtest

    if not n:
        return f"{accuracy:.4f}"
    interval = binomtest(round(accuracy * n), n).proportion_ci(method="wilson")
    return f"{accuracy:.4f} (95% CI {interval.low:.2f}–{interval.high:.2f})"


def card_section(model: str, result: dict) -> str:
    test, removed, external = result["test"], result["lungs_removed"], result["external"]
    adults = "\n".join(f"| {name} | {row['n']} | {row['called_viral_pneumonia']:.1%} |" for name, row in result["adult_other_findings"].items())
    return f"""{CARD_MARK}

Written by `python -m train.audit --model {model} --write`, through the app's own path (reader, input check, lung mask, crop),
with lung masks from `{result.get("segmenter", "the zoo's default segmenter")}`.

| figure | value | n |
|---|---|---|
| test split (same sources as training): accuracy / macro-F1 | {test['accuracy']:.4f} / {test['macro_f1']:.4f} | {test['n']} |
| **other hospitals** ({external['data']}): accuracy | **{with_interval(external['accuracy'], external['n'])}** | {external['n']} |
| **lungs removed** (test split, dilated lung mask filled with the film's median grey): accuracy; chance is 0.33 | **{with_interval(removed['accuracy'], removed['n'])}** | {removed['n']} |
| lungs removed, other hospitals: accuracy | {external['lungs_removed_accuracy']:.4f} | {external['n']} |
| share of GradCAM mass inside the lung mask (test split) | {test['heatmap_in_lungs'] if test['heatmap_in_lungs'] is None else f"{test['heatmap_in_lungs']:.1%}"} | {test['n']} |
| test images the input check flagged | {test['flagged']:.1%} | {test['n']} |

Adult films from other hospitals with other findings, called "Viral Pneumonia" (in cxr-3class that class is young children
from one hospital, so a high share means the model reads age or site, not disease):

| set | n | called Viral Pneumonia |
|---|---|---|
{adults}

The other-hospital set is small (n={external['n']}): read its accuracy as a probe, not a precise figure.
{blank_rows(result)}{shift_rows(result)}"""


def blank_rows(result: dict) -> str:
    by_blank = result.get("lungs_removed_by_blank")
    if not by_blank:
        return ""
    fills = [fill for fill in BLANK_FILLS if fill in by_blank]
    return (f"""
With the lungs filled another way (`python -m train.evaluate --lungs-removed --blank-fill FILL`; test split, n={by_blank['n']},
chance 0.33): a model that learned one blank rather than that the lungs are gone answers again with the others.

| {' | '.join(fills)} |
|{'---|' * len(fills)}
| {' | '.join(f"{by_blank[fill]:.3f}" for fill in fills)} |
""")


def shift_rows(result: dict) -> str:
    shifts = result.get("site_shift")
    if not shifts:
        return ""
    names = [name for name in shifts if name not in ("n", "worst")]
    return (f"""
Another hospital, simulated (`python -m train.evaluate --shift all`: each test film changed before the intake as a different
scanner, protocol or positioning would; n={shifts['n']}): accuracy, worst **{shifts['worst']}**.

| {' | '.join(names)} |
|{'---|' * len(names)}
| {' | '.join(f"**{shifts[name]:.3f}**" if name == shifts['worst'] else f"{shifts[name]:.3f}" for name in names)} |
""")


@dataclass
class AuditConfig:
    model: str | None = field(default=None, metadata={"help": "a classify, multitask or zeroshot zoo model (default: the zoo's default classifier)"})
    shared: Path = SHARED
    write: bool = field(default=False, metadata={"help": "store the figures in the checkpoint's metrics.json under 'audit'"})
    card_only: bool = field(default=False, metadata={"help": "rewrite the card's section from the figures already in metrics.json"})


def main(argv=None) -> dict:
    args = parse_config(AuditConfig, argv, __doc__)
    model = args.model or zoo.default("classify").name
    folder = zoo.load(model).folder
    metrics = json.loads((folder / "metrics.json").read_text())
    if args.card_only and "audit" not in metrics:
        raise SystemExit(f"{model} has no audit in its metrics.json yet: run `python -m train.audit --model {model} --write`.")
    result = metrics["audit"] if args.card_only else audit(model, args.shared)
    if args.write and not args.card_only:
        metrics["audit"] = result
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if args.write or args.card_only:
        card = (folder / "README.md").read_text()
        (folder / "README.md").write_text(card.split(CARD_MARK)[0].rstrip() + "\n\n" + card_section(model, result))
    print(json.dumps({"model": model, **result}))
    return result


if __name__ == "__main__":
    main()
