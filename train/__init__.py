"""Training and evaluation CLIs: `python -m train.classify | train.evaluate`."""
