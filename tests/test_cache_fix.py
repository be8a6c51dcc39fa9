"""Gradio's image cache as patched by cxr_demo.ui.cache_fix: a picture served again is neither encoded nor rewritten."""
from __future__ import annotations

import numpy as np
from gradio import processing_utils
from PIL import Image

from cxr_demo.ui import cache_fix


def test_an_identical_picture_is_encoded_once_and_a_new_one_gets_its_own_file(tmp_path, monkeypatch):
    encode, calls = processing_utils.encode_pil_to_bytes, []
    monkeypatch.setattr(processing_utils, "encode_pil_to_bytes", lambda *a, **k: calls.append(1) or encode(*a, **k))
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    first = cache_fix.save_pil_to_cache(Image.fromarray(pixels), str(tmp_path))
    again = cache_fix.save_pil_to_cache(Image.fromarray(pixels.copy()), str(tmp_path))
    pixels[:24] = 255 - pixels[:24]  # a visible change: WebP is lossy, so a one-bit change may encode to the same file
    changed = cache_fix.save_pil_to_cache(Image.fromarray(pixels), str(tmp_path))
    assert first == again and len(calls) == 2 and changed != first
    assert Image.open(first).size == (64, 48) and Image.open(changed).size == (64, 48)


def test_a_picture_whose_file_was_cleaned_up_is_written_again(tmp_path):
    image = Image.fromarray(np.full((8, 8, 3), 7, np.uint8))
    first = cache_fix.save_pil_to_cache(image, str(tmp_path))
    (tmp_path.joinpath(first)).unlink()
    again = cache_fix.save_pil_to_cache(image, str(tmp_path))
    assert again == first and tmp_path.joinpath(again).exists()
