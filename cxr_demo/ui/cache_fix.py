"""Gradio 6.31 writes every image output to a content-hashed cache path with a plain `write_bytes`, even when that file
already exists. Two clicks that produce the same picture (a classroom pressing the same example) then truncate the file
while the first one's download streams it, and the client reads 0 bytes ("peer closed connection without sending
complete message body"). Gradio's own `save_file_to_cache` already writes under a temporary name and renames; images
get the same treatment here: an existing cached image is reused, and a new one appears whole or not at all.
An identical picture is not even encoded again: the WebP encoder costs ~50 ms for a 768 px overlay, which was most of what a
remembered answer (see cxr_demo.tasks.memo) still cost the server; hashing the raw pixels costs ~4 ms."""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from gradio import processing_utils

from cxr_demo.io.recent import Recent

_ENCODED = Recent(256)  # raw pixels' digest -> the cached file; paths only, so the memory is negligible


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    digest = hashlib.blake2b(img.tobytes(), digest_size=16)
    digest.update(f"{img.mode}{img.size}{cache_dir}{name}.{format}".encode())
    key = digest.hexdigest()
    known = _ENCODED.get(key)
    if known is not None and Path(known).exists():
        os.utime(known)
        return known
    path = _encode_to_cache(img, cache_dir, name, format)
    _ENCODED.put(key, path)
    return path


def _encode_to_cache(img, cache_dir: str, name: str, format: str) -> str:
    data = processing_utils.encode_pil_to_bytes(img, format)
    target = (Path(cache_dir) / processing_utils.hash_bytes(data) / f"{name}.{format}").resolve()
    if target.exists():
        os.utime(target)  # `delete_cache` ages files by ctime: a picture handed out again must not expire on its first schedule
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{uuid.uuid4().hex}.{target.name}")
    partial.write_bytes(data)
    os.replace(partial, target)
    return str(target)


def install() -> None:
    processing_utils.save_pil_to_cache = save_pil_to_cache
