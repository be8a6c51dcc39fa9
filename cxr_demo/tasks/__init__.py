"""Stage 3, what a click computes: one module per task, each taking an `XRay` and returning plain dataclasses."""
