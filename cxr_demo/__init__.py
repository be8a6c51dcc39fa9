"""cxr-demo: chest X-ray AI in the browser. A teaching demo, not a medical device."""

__version__ = "0.1.0"

NOT_A_MEDICAL_DEVICE = (
    "Demo and teaching tool only. Not a medical device: do not use it to diagnose, treat or triage patients."
)
