"""Classification metrics (torchmetrics), calibration error and temperature scaling."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import (MulticlassAccuracy, MulticlassCalibrationError, MulticlassConfusionMatrix, MulticlassF1Score,
                                         MulticlassPrecision, MulticlassRecall)

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature that minimises validation NLL (Guo et al. 2017); logits are divided by it."""
    logits, labels = logits.detach().clone(), labels.clone()  # may be inference-mode tensors
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1")
    return float(metric(probs, labels))


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> dict[str, list]:
    """Mean confidence, accuracy and count per confidence bin of the top class: the data of a reliability diagram."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    index = (confidence * n_bins).long().clamp(max=n_bins - 1)
    count = torch.bincount(index, minlength=n_bins)
    mean = lambda values: (torch.bincount(index, weights=values, minlength=n_bins) / count.clamp(min=1)).tolist()  # noqa: E731
    return {"confidence": [round(v, 4) for v in mean(confidence)], "accuracy": [round(v, 4) for v in mean(correct)],
            "count": count.tolist()}


def classification_report(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[str], temperature: float = 1.0
) -> dict:
    """The seeds' columns (macro F1/precision/recall, accuracy) plus per class, confusion matrix and ECE."""
    k = len(classes)
    probs = (logits / temperature).softmax(1)
    preds = probs.argmax(1)
    per_class = {
        "f1": MulticlassF1Score(k, average=None)(preds, labels),
        "precision": MulticlassPrecision(k, average=None)(preds, labels),
        "recall": MulticlassRecall(k, average=None)(preds, labels),
    }
    return {
        "n": int(labels.numel()),
        "accuracy": float(MulticlassAccuracy(k, average="micro")(preds, labels)),
        "macro_f1": float(MulticlassF1Score(k, average="macro")(preds, labels)),
        "macro_precision": float(MulticlassPrecision(k, average="macro")(preds, labels)),
        "macro_recall": float(MulticlassRecall(k, average="macro")(preds, labels)),
        "per_class": {
            name: {metric: round(float(values[i]), 4) for metric, values in per_class.items()}
            | {"support": int((labels == i).sum())}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": MulticlassConfusionMatrix(k)(preds, labels).tolist(),
        "ece": expected_calibration_error(probs, labels),
        "reliability": reliability_bins(probs, labels),
        "ece_uncalibrated": expected_calibration_error(logits.softmax(1), labels),
        "nll": float(F.cross_entropy(logits / temperature, labels)),
        "nll_uncalibrated": float(F.cross_entropy(logits, labels)),
        "temperature": temperature,
    }
