"""read_xray: every accepted format becomes float [0, 1] pixels; every bad input becomes a plain InvalidImage."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, SecondaryCaptureImageStorage, generate_uid

from cxr_demo.io import InvalidImage, read_xray
from tests.conftest import SHARED_DATA, needs_shared_data


def png_bytes(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def gradient(h=256, w=200) -> np.ndarray:
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def make_dicom(pixels: np.ndarray | None, photometric="MONOCHROME2", syntax=ExplicitVRLittleEndian, **tags) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "PID-424242", "19700101"
    ds.Modality, ds.ViewPosition = "DX", "PA"
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class TestAcceptedFormats:
    def test_8bit_png(self, example_png):
        xray = read_xray(example_png)
        assert xray.pixels.dtype == np.float32 and xray.pixels.shape == (224, 224)
        assert 0 <= xray.pixels.min() and xray.pixels.max() <= 1 and xray.pixels.std() > 0.05
        assert xray.meta.format == "PNG" and xray.meta.bits == 8

    def test_16bit_png_uses_full_range(self):
        data = (gradient() * 4095).astype(np.uint16)  # 12-bit data in a 16-bit container
        xray = read_xray(png_bytes(Image.fromarray(data)))
        assert xray.meta.bits == 16
        assert xray.pixels.min() == pytest.approx(0) and xray.pixels.max() == pytest.approx(1)

    def test_rgba_png_is_flattened_with_a_note(self):
        rgba = np.zeros((200, 200, 4), np.uint8)
        rgba[..., :3] = (gradient(200, 200) * 255).astype(np.uint8)[..., None]
        rgba[..., 3] = 255
        rgba[:50, :, 3] = 0
        xray = read_xray(png_bytes(Image.fromarray(rgba, "RGBA")))
        assert xray.pixels.shape == (200, 200)
        assert xray.pixels[:50].max() == 0  # transparent -> black
        assert any("alpha" in w for w in xray.warnings)

    def test_colour_photo_is_flagged(self):
        rgb = np.zeros((200, 200, 3), np.uint8)
        rgb[..., 0] = 250
        rgb[..., 2] = (gradient(200, 200) * 255).astype(np.uint8)
        assert any("colour" in w for w in read_xray(png_bytes(Image.fromarray(rgb))).warnings)

    def test_jpeg_exif_orientation_is_applied(self):
        image = Image.fromarray((gradient(120, 300) * 255).astype(np.uint8))
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        xray = read_xray(png_bytes(image, "JPEG", exif=exif.tobytes()))
        assert xray.pixels.shape == (300, 120)

    @pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
    def test_other_bitmaps(self, fmt):
        xray = read_xray(png_bytes(Image.fromarray((gradient() * 255).astype(np.uint8)), fmt))
        assert xray.pixels.shape == (256, 200)

    def test_jpeg_baseline_dicom(self, example_dicom):
        xray = read_xray(example_dicom)
        assert xray.pixels.shape == (1024, 1024)
        assert xray.meta.modality == "CR" and xray.meta.view_position == "PA"
        assert xray.meta.pixel_spacing_mm == (0.168, 0.168)
        assert "JPEG Baseline" in xray.meta.transfer_syntax

    def test_monochrome1_is_inverted(self):
        data = (gradient() * 4000).astype(np.uint16)
        mono2 = read_xray(make_dicom(data, "MONOCHROME2"))
        mono1 = read_xray(make_dicom(data, "MONOCHROME1"))
        np.testing.assert_allclose(mono1.pixels, 1 - mono2.pixels, atol=1e-6)

    def test_modality_and_voi_lut_windowing(self):
        data = (gradient() * 4000).astype(np.uint16)
        windowed = read_xray(make_dicom(data, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=1000))
        # values below the window are clipped to black, above it to white: a real window, not min-max
        assert (windowed.pixels == 0).mean() > 0.1 and (windowed.pixels == 1).mean() > 0.3

    def test_lateral_view_is_flagged(self):
        xray = read_xray(make_dicom((gradient() * 4000).astype(np.uint16), ViewPosition="LL"))
        assert any("lateral" in w for w in xray.warnings)

    def test_dicom_without_preamble_or_file_meta(self):
        ds = pydicom.dcmread(io.BytesIO(make_dicom((gradient() * 4000).astype(np.uint16))))
        del ds.file_meta
        ds.preamble = None
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
        assert buffer.getvalue()[128:132] != b"DICM"
        assert read_xray(buffer.getvalue()).pixels.shape == (256, 200)

    def test_patient_identifiers_never_leave_the_reader(self):
        xray = read_xray(make_dicom((gradient() * 4000).astype(np.uint16)))
        shown = repr(xray) + str(xray.meta.as_rows()) + " ".join(xray.warnings)
        for secret in ("Doe", "Jane", "PID-424242", "19700101"):
            assert secret not in shown

    @needs_shared_data
    def test_real_monochrome1_header_inverts_real_pixels(self):
        normal = read_xray(SHARED_DATA / "dicom" / "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
        fake = read_xray(SHARED_DATA / "dicom" / "Fake_MONOHR1.dcm")
        assert np.corrcoef(normal.pixels.ravel(), fake.pixels.ravel())[0, 1] < -0.99

    def test_huge_image_is_downsampled_for_work(self):
        big = (np.tile(np.linspace(0, 255, 5000), (3000, 1))).astype(np.uint8)
        xray = read_xray(png_bytes(Image.fromarray(big)))
        assert max(xray.pixels.shape) == 2048  # working copy
        assert (xray.meta.width, xray.meta.height) == (5000, 3000)  # what the user uploaded


class TestRejectedInputs:
    @pytest.mark.parametrize(
        "raw, words",
        [
            (b"", "empty"),
            (b"%PDF-1.7 this is a report, not an image" * 10, "not an image"),
            (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "damaged"),
        ],
    )
    def test_bad_bytes(self, raw, words):
        with pytest.raises(InvalidImage, match=words):
            read_xray(raw)

    def test_truncated_png(self, example_png):
        raw = example_png.read_bytes()
        with pytest.raises(InvalidImage, match="damaged or truncated"):
            read_xray(raw[: len(raw) // 2])

    def test_truncated_dicom(self, example_dicom):
        raw = example_dicom.read_bytes()
        with pytest.raises(InvalidImage):
            read_xray(raw[: len(raw) // 2])

    def test_decompression_bomb(self):
        bomb = png_bytes(Image.new("L", (9000, 9000)), optimize=True)
        assert len(bomb) < 1_000_000
        with pytest.raises(InvalidImage, match="too large"):
            read_xray(bomb)

    @pytest.mark.parametrize("size, words", [((20, 20), "only"), ((2000, 100), "elongated")])
    def test_absurd_sizes(self, size, words):
        with pytest.raises(InvalidImage, match=words):
            read_xray(png_bytes(Image.new("L", size, 128)))

    def test_flat_image(self):
        with pytest.raises(InvalidImage, match="flat"):
            read_xray(png_bytes(Image.new("L", (300, 300), 128)))

    def test_dicom_without_pixels(self):
        with pytest.raises(InvalidImage, match="no image"):
            read_xray(make_dicom(None))

    def test_dicom_with_unsupported_codec(self):
        raw = make_dicom((gradient() * 4000).astype(np.uint16))
        ds = pydicom.dcmread(io.BytesIO(raw))
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xf7not-really-jpeg-ls\xff\xd9"])
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        with pytest.raises(InvalidImage, match="compression|decoded"):
            read_xray(buffer.getvalue())

    def test_missing_file(self, tmp_path):
        with pytest.raises(InvalidImage, match="No file"):
            read_xray(tmp_path / "nothing.png")


def test_a_float_image_with_nan_and_inf_reads_as_finite_pixels():
    import io

    values = np.random.default_rng(0).random((64, 64)).astype(np.float32) * 1000
    values[3, 3], values[5, 5] = np.nan, np.inf
    buffer = io.BytesIO()
    Image.fromarray(values, mode="F").save(buffer, format="TIFF")
    pixels = read_xray(buffer.getvalue()).pixels
    assert np.isfinite(pixels).all() and pixels.min() == 0.0 and pixels.max() == 1.0
    assert np.ptp(pixels) > 0 and pixels[10, 10] == pytest.approx(values[10, 10] / values[np.isfinite(values)].max(), abs=0.01)


@pytest.mark.parametrize("side, size, expected", [(1024, 192, 512), (1024, 128, 256), (1000, 224, 500), (300, 192, 300), (224, 128, 224)])
def test_a_big_film_is_area_averaged_by_a_whole_factor_before_the_network_resize(side, size, expected):
    from cxr_demo.io.preprocess import shrink_for

    film = np.random.default_rng(0).random((side, side)).astype(np.float32)
    assert shrink_for(film, (size, size)).shape == (expected, expected)


def test_the_shrunk_films_network_input_stays_within_a_grey_level_of_the_direct_resize(example_dicom):
    import torch
    from torchvision.transforms.v2 import functional as TF

    from cxr_demo.io.preprocess import model_input, to_uint8

    pixels = read_xray(example_dicom).pixels
    assert max(pixels.shape) >= 4 * 192  # the case the shortcut is for
    direct = TF.resize(torch.from_numpy(to_uint8(pixels))[None], [192, 192], antialias=True).float() / 255
    shrunk = model_input(pixels, (192, 192), (0.0,), (1.0,), steps="none")[0]
    assert (shrunk - direct).abs().mean() * 255 < 1.0


@pytest.mark.parametrize("dtype, low, high", [(np.uint8, 0, 255), (np.uint8, 90, 140), (np.uint16, 0, 4095), (np.uint16, 3, 200), (np.int32, -1000, 3000)])
def test_integer_pixels_rescale_exactly_as_their_float32_copy_does(dtype, low, high):
    from cxr_demo.io.xray import _rescale

    stored = np.random.default_rng(0).integers(low, high, (64, 80), endpoint=True).astype(dtype)
    taken_as_stored, as_float = _rescale(stored), _rescale(stored.astype(np.float32))
    assert taken_as_stored.dtype == np.float32
    np.testing.assert_array_equal(taken_as_stored, as_float)


def test_preprocessing_runs_on_one_torch_thread_and_gives_the_threads_back_even_on_error():
    import torch

    from cxr_demo.io.preprocess import one_torch_thread

    configured = torch.get_num_threads()
    torch.set_num_threads(2)  # the app's setting on 2 cores, so that "given back" differs from "one"
    try:
        with pytest.raises(RuntimeError), one_torch_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("a failing resize")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(configured)
