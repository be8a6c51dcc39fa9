"""How the models run on a 2-core CPU: ONNX Runtime for the models where it pays, and a heap that does not creep.

Measured with `python -m cxr_demo.bench --profile`: the lung U-Net's forward pass is most of a Segment click, and ONNX Runtime
runs it faster than eager PyTorch in channels-last: 59 vs 66 ms for the full U-Net at 256 px, and 19 vs 35 ms for the slim-decoder
one at 192 px (its many thin layers are where eager dispatch costs most). Only what needs no gradients runs there: the
segmenters, the input check, the zero-shot image tower (76 vs 67 ms for a whole zero-shot click) and a classifier's
forward-only GradCAM (`cxr_demo.tasks.cam.ForwardOnlyGradCAM`: 11 vs 30 ms); the other heatmap methods need autograd.

The export happens in memory when the model loads, from the weights already read from safetensors: no .onnx file is
downloaded or stored. `CXR_DEMO_ONNX=0` keeps eager PyTorch; any export failure falls back to it with a warning.
"""
from __future__ import annotations

import io
import logging
import os
import warnings

import numpy as np
import torch

log = logging.getLogger("cxr_demo")


class OnnxRuntimeModule(torch.nn.Module):
    """Drop-in for an inference-only module: tensors in, tensors (or a tuple of them) out. The session is built for one
    image at a time (what every click sends); a batch runs image by image and is stacked again."""

    def __init__(self, session, input_name: str):
        super().__init__()
        self.session, self.input_name = session, input_name

    def forward(self, x: torch.Tensor):
        x = x.detach().float()
        # numpy makes the contiguous copy: a torch copy would wake torch's OpenMP pool, which then spins against ORT's
        per_image = [self.session.run(None, {self.input_name: np.ascontiguousarray(image[None].numpy())}) for image in x]
        outputs = [torch.from_numpy(np.concatenate(parts)) for parts in zip(*per_image)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def onnx_enabled() -> bool:
    return os.environ.get("CXR_DEMO_ONNX", "1") != "0"


def with_onnxruntime(module: torch.nn.Module, example: torch.Tensor, name: str) -> torch.nn.Module:
    """`module` exported to ONNX Runtime, or `module` itself when that is switched off, missing or fails."""
    if not onnx_enabled():
        return module
    try:
        import onnxruntime
    except ImportError:
        return module
    try:
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices; the export is checked below
            torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, input_names=["x"], opset_version=17,
                              dynamic_axes={"x": {0: "batch"}})
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # ORT's workers spin between the ops of one run (a sleeping pool pays a wake-up per op), and stop when the run
        # returns, so they do not steal the 2 cores from torch afterwards: a classify click 44.7 -> 39.2 ms together with
        # `cxr_demo.io.preprocess.one_torch_thread` (2-core Xeon with AVX-512, 2026-12-02); spinning that went on after
        # the run made clicks slower (70-86 ms)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        # a batch dimension fixed at 1 lets ORT plan every shape ahead: 4.8 vs 6.8 ms for EfficientNet-Lite0 at 224 px and
        # 2.3 vs 3.2 for the input check (2-core Xeon with AVX-512, 2026-12-02)
        options.add_free_dimension_override_by_name("batch", 1)
        session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        exported = OnnxRuntimeModule(session, "x")
        _check_same_output(module, exported, example)
        return exported
    except Exception as error:  # noqa: BLE001 - any exporter or runtime failure just means eager PyTorch
        log.warning("model %s stays in eager PyTorch: ONNX export failed (%s)", name, str(error).splitlines()[0] if str(error) else error)
        return module


def _check_same_output(module: torch.nn.Module, exported: OnnxRuntimeModule, example: torch.Tensor) -> None:
    with torch.inference_mode():
        probe = torch.rand(example.shape, generator=torch.Generator().manual_seed(0))
        expected, got = module(probe), exported(probe)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    if len(expected) != len(got) or any(not torch.allclose(e.float(), g, atol=1e-3, rtol=1e-3) for e, g in zip(expected, got)):
        raise RuntimeError("the exported model's output differs from PyTorch's")


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own heap arena, and Gradio serves each request on a worker thread:
    freed tensors then stay resident in many half-empty arenas and the process creeps upwards. Two arenas bound it."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def release_memory() -> None:
    """Hand freed heap back to the OS after a request that allocated a lot (ScoreCAM's masked batches, Compare)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
