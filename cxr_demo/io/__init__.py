"""Stage 1, file -> `XRay`: decoding PNG/JPG/DICOM into safe pixels and metadata, and the pixels -> tensor steps models share."""
from cxr_demo.io.xray import InvalidImage, SafeMeta, XRay, read_xray

__all__ = ["InvalidImage", "SafeMeta", "XRay", "read_xray"]
