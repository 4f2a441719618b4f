"""Preprocessing: one path for PNG/JPG and DICOM, blind to size, colour mode, padding and burnt-in letters."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ml import preprocess
from tests.ml.conftest import head_phantom_hu


def png_bytes(arr: np.ndarray, mode: str) -> io.BytesIO:
    img = Image.fromarray(arr)
    if mode == "RGB":
        img = img.convert("RGB")
    elif mode == "RGBA":
        img = img.convert("RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    return buf


def test_colour_modes_give_the_same_greyscale_slice():
    u8 = preprocess.apply_window(head_phantom_hu(160, bleed=True), *preprocess.MODEL_WINDOW)
    grey = [preprocess.load_slice(png_bytes(u8, m)) for m in ("L", "RGB", "RGBA")]
    for g in grey:
        assert g.dtype == np.uint8 and g.ndim == 2
        np.testing.assert_array_equal(g, u8)


def test_png_and_dicom_derive_the_same_model_input(tmp_path):
    from tests.ml.test_dicom import make_ct, to_bytes

    hu = np.rint(head_phantom_hu(200, bleed=True))
    dcm_path = tmp_path / "slice.dcm"
    dcm_path.write_bytes(to_bytes(make_ct(hu)))
    png_path = tmp_path / "slice.png"
    Image.fromarray(preprocess.apply_window(hu, *preprocess.MODEL_WINDOW)).convert("RGB").save(png_path)
    a = preprocess.prepare(preprocess.load_slice(dcm_path), size=96)
    b = preprocess.prepare(preprocess.load_slice(png_path), size=96)
    assert a.shape == (1, 96, 96) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_crop_is_blind_to_canvas_size_padding_and_letters():
    head = preprocess.apply_window(head_phantom_hu(200, bleed=True), *preprocess.MODEL_WINDOW)
    canvas = np.zeros((520, 700), np.uint8)  # a bigger, non-square image with the head off-centre
    canvas[150:350, 300:500] = head
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    draw.rectangle([10, 10, 60, 70], fill=255)  # a burnt-in panel letter block in the corner
    draw.text((600, 480), "R", fill=255)
    lettered = np.asarray(img)
    a = preprocess.crop_resize(head, size=128)
    b = preprocess.crop_resize(lettered, size=128)
    assert a.shape == b.shape == (128, 128)
    # Same picture of the head; the letters and the canvas leave no trace. The box may move by a pixel at the
    # coarser search resolution of big images, so compare after a light blur.
    blur = lambda im: ndimage.gaussian_filter(im.astype(float), 1.5)  # noqa: E731
    assert np.abs(blur(a) - blur(b)).mean() < 1.0
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    assert b[:10, :10].max() == 0
    # An upscaled copy (a bigger file of the same head) gives the same input too.
    big = np.asarray(Image.fromarray(lettered).resize((1400, 1040), Image.BILINEAR))
    c = preprocess.crop_resize(big, size=128)
    assert np.abs(blur(a) - blur(c)).mean() < 4.0


def test_grey_background_is_not_taken_for_the_head():
    head = preprocess.apply_window(head_phantom_hu(200), *preprocess.MODEL_WINDOW)
    grey_bg = np.where(head == 0, 60, head).astype(np.uint8)
    grey_bg = np.pad(grey_bg, 60, constant_values=60)
    top, bottom, left, right = preprocess.head_bbox(grey_bg)
    # The head spans about 0.84 x 0.72 of its 200 px box; the 60 px grey border must be excluded.
    assert top >= 60 and left >= 60 and bottom <= 260 + 4 and right <= 260 + 4


def test_prepare_normalises_with_encoder_statistics():
    x = preprocess.prepare(np.full((50, 50), 255, np.uint8), size=32)
    np.testing.assert_allclose(x, (1 - preprocess.NORM_MEAN) / preprocess.NORM_STD, rtol=1e-5)


def _stored(arr: np.ndarray, fmt: str) -> io.BytesIO:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    buf.seek(0)
    return buf


def ct_number_pictures(hu: np.ndarray) -> dict[str, io.BytesIO]:
    """One CT slice in HU stored as exporters store CT numbers in 16-bit and float pictures."""
    return {
        "16-bit PNG, HU + 1024": _stored(np.clip(hu + 1024, 0, 65535).astype(np.uint16), "PNG"),
        # Written without clipping: the padding below -1024 HU wraps round to the top of the 16-bit range.
        "16-bit PNG, HU + 1024 wrapped": _stored(((hu + 1024).astype(np.int64) % 65536).astype(np.uint16), "PNG"),
        "16-bit PNG, HU + 32768": _stored((hu + 32768).astype(np.uint16), "PNG"),
        "signed TIFF, HU": _stored(hu.astype(np.int32), "TIFF"),
        "float TIFF, HU": _stored(hu.astype(np.float32), "TIFF"),
    }


# Display windows a picture may come in: brain, the model's, subdural, stroke, wide soft tissue. (A bone window stored
# with 12 bits can pass for HU + 1024: a known miss, see ml.preprocess.ct_number_offset.)
DISPLAY_WINDOWS = (preprocess.BRAIN_WINDOW, preprocess.MODEL_WINDOW, preprocess.SUBDURAL_WINDOW, (40, 40), (140, 400))


def test_pictures_of_ct_numbers_are_windowed_like_dicom():
    """A 16-bit or float picture holding HU (as is, + 1024 or + 32768) becomes the slice DICOM of the same HU gives;
    stretched from its darkest to its brightest pixel instead, the brain would be a few grey levels."""
    hu = np.rint(head_phantom_hu(160, bleed=True))
    hu[:, :6] = -2000  # padding outside the field of view, as scanners write it
    expected = preprocess.apply_window(hu, *preprocess.MODEL_WINDOW)
    for name, picture in ct_number_pictures(hu).items():
        np.testing.assert_array_equal(preprocess.load_slice(picture), expected, err_msg=name)


def test_high_depth_display_pictures_are_not_taken_for_ct_numbers():
    """A windowed picture saved with 16 or 12 bits, or 8-bit values in a 16-bit file, is a display picture: it is not
    read as HU, and keeps its look."""
    hu = np.rint(head_phantom_hu(160, bleed=True))
    for window in DISPLAY_WINDOWS:
        u8 = preprocess.apply_window(hu, *window)
        for scale in (257, 4095 / 255, 1):
            stored = np.rint(u8.astype(np.float64) * scale).astype(np.uint16)
            assert preprocess.ct_number_offset(stored) is None, (window, scale)
            assert np.abs(preprocess.load_slice(_stored(stored, "PNG")).astype(int) - u8).max() <= 1, (window, scale)
    # A float picture scaled to 0..1 is stretched back to 0..255, not truncated to black.
    u8 = preprocess.apply_window(hu, *preprocess.BRAIN_WINDOW)
    as_float = _stored(u8.astype(np.float32) / 255.0, "TIFF")
    assert np.abs(preprocess.load_slice(as_float).astype(int) - u8).max() <= 1


def test_real_dicom_slices_stored_as_ct_number_pictures_give_the_dicom_slice(data_root):
    from ml import dicom

    paths = [p for p in sorted((data_root / "dicom").rglob("*.dcm")) if "masks" not in p.parts]
    assert len(paths) >= 50
    for path in paths:
        hu = dicom.to_hu(dicom.read_dataset(path))
        expected = preprocess.load_slice(path)
        for name, picture in ct_number_pictures(hu).items():
            got = preprocess.load_slice(picture).astype(int)
            assert np.abs(got - expected).max() <= 1, (path.name, name)
        # Display pictures of the same slice, saved with 12 or 16 bits, are never read as CT numbers.
        for window in DISPLAY_WINDOWS:
            u8 = preprocess.apply_window(hu, *window).astype(np.float64)
            for scale in (257, 4095 / 255):
                assert preprocess.ct_number_offset(np.rint(u8 * scale)) is None, (path.name, window, scale)


def test_damaged_oversized_and_multi_page_pictures_are_named_for_what_they_are(tmp_path):
    """A truncated PNG or JPEG used to be reported as "not a DICOM file"; a multi-page TIFF was read as its first page
    alone, silently. Each is now a ValueError that says what is wrong, with the file's name."""
    import pytest

    from tests.bad_uploads import png_bomb

    head = preprocess.apply_window(head_phantom_hu(64), *preprocess.MODEL_WINDOW)
    for fmt, name in (("PNG", "cut.png"), ("JPEG", "cut.jpg")):
        whole = io.BytesIO()
        Image.fromarray(head).save(whole, fmt)
        (tmp_path / name).write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
        with pytest.raises(ValueError, match=rf"^{name}: the picture cannot be read \(damaged or truncated"):
            preprocess.load_slice(tmp_path / name)
    (tmp_path / "bomb.png").write_bytes(png_bomb())
    with pytest.raises(ValueError, match="bomb.png is too large a picture for a CT slice"):
        preprocess.load_slice(tmp_path / "bomb.png")
    pages = [Image.fromarray(head), Image.fromarray(head[::-1])]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ValueError, match="stack.tif holds 2 pictures"):
        preprocess.read_scan(tmp_path / "stack.tif")
    Image.fromarray(head).save(tmp_path / "one.tif")
    assert np.array_equal(preprocess.load_slice(tmp_path / "one.tif"), head)


def test_exif_orientation_is_applied_as_a_viewer_shows_the_picture():
    """A JPEG stored sideways with EXIF Orientation 6 (rotate 90 degrees clockwise to view): the model reads it
    upright, as the browser shows the stored upload."""
    upright = np.zeros((40, 60), np.uint8)
    upright[:10, :20] = 200  # a bright block in the top left corner: no mirror or other turn puts it there
    stored = Image.fromarray(np.rot90(upright, 1))  # what a camera stores: turned the other way
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    read = preprocess.load_slice(buffer)
    assert read.shape == (40, 60)
    assert read[:10, :20].mean() > 150 and read[:, 25:].mean() < 50 and read[15:].mean() < 50


def test_a_camera_mpo_jpeg_is_one_picture():
    """MPO (a JPEG with a preview image inside, as cameras write) has two frames but is one picture: its first."""
    head = preprocess.apply_window(head_phantom_hu(64), *preprocess.MODEL_WINDOW)
    buffer = io.BytesIO()
    Image.fromarray(head).save(
        buffer, "MPO", quality=95, save_all=True, append_images=[Image.fromarray(head[::2, ::2])]
    )
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    plain = io.BytesIO()
    Image.fromarray(head).save(plain, "JPEG", quality=95)
    read = preprocess.load_slice(buffer)
    assert read.shape == (64, 64) and np.array_equal(read, preprocess.load_slice(plain))
