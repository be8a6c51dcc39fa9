"""Stage 2, once per image: the input check (is this an upright frontal chest X-ray?) and the lung mask every task reads."""
from cxr_demo.intake.stage import Intake, admit, forget, intake

__all__ = ["Intake", "admit", "forget", "intake"]
