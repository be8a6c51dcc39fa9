"""Report-like training captions for the LiT model: many phrasings per class, so it learns meaning, not one string.

The app's prompt presets (`cxr_demo.tasks.zeroshot.PRESETS`) are worded independently of these, so that scoring a preset is
a test of free-text prompts, not a lookup of training strings.
"""
from __future__ import annotations

import random

FINDINGS = {
    "COVID": [
        "bilateral peripheral ground-glass opacities", "multifocal patchy consolidation in both lower zones",
        "findings consistent with COVID-19 pneumonia", "SARS-CoV-2 infection with bilateral airspace disease",
        "diffuse hazy opacities with a peripheral and basal predominance", "coronavirus pneumonia",
        "an atypical pneumonia pattern typical of COVID-19", "bilateral lower lobe consolidation in an adult with COVID",
        "COVID-19 with peripheral airspace opacities", "rounded peripheral opacities in both lungs from novel coronavirus infection",
    ],
    "Normal": [
        "no acute cardiopulmonary abnormality", "clear lungs", "lungs clear without focal consolidation, effusion or pneumothorax",
        "normal heart size and clear lung fields", "an unremarkable chest", "no evidence of pneumonia", "a normal study",
        "healthy lungs", "no active disease in the chest", "well-expanded clear lungs and a normal cardiomediastinal silhouette",
    ],
    "Viral Pneumonia": [
        "viral pneumonia", "perihilar peribronchial thickening with interstitial infiltrates",
        "bilateral streaky perihilar opacities in a child", "a pediatric viral lower respiratory tract infection",
        "hyperinflation with peribronchial cuffing", "non-COVID viral pneumonia", "a bronchiolitis pattern in an infant",
        "diffuse interstitial markings from a viral infection in a young child", "viral lung infection in a pediatric patient",
        "central peribronchial opacities of viral pneumonitis",
    ],
}

TEMPLATES = [
    "{}.", "chest x-ray: {}.", "frontal chest radiograph showing {}.", "impression: {}.", "findings: {}.", "PA chest film with {}.",
    "the radiograph demonstrates {}.", "{} on this CXR.",
]


def caption_bank(classes: list[str]) -> tuple[list[str], list[int]]:
    """Every finding in every template, with the class index of each caption."""
    missing = [name for name in classes if name not in FINDINGS]
    if missing:
        raise SystemExit(f"No captions for class {missing[0]!r}; add phrasings to train/captions.py FINDINGS.")
    pairs = [(template.format(finding), index)
             for index, name in enumerate(classes) for finding in FINDINGS[name] for template in TEMPLATES]
    return [caption for caption, _ in pairs], [index for _, index in pairs]


def sample_captions(caption_labels: list[int], image_labels, rng: random.Random) -> list[int]:
    """One random caption of the right class per image."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(caption_labels):
        by_class.setdefault(label, []).append(i)
    return [rng.choice(by_class[int(label)]) for label in image_labels]
