"""Stage 4, results -> pictures: overlays and figures (overlays.py) and boxes (boxes.py), as uint8 RGB arrays or matplotlib figures."""
