"""core.io: round trips, depth and channel handling, and every bad-input message."""
import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from core.io import (
    MAX_PIXELS,
    ImageError,
    encode_png,
    read_image,
    read_mask,
    write_image,
    write_mask,
)


def _png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(rows, cols, depth, colour, filtered):
    header = struct.pack(">IIBBBBB", cols, rows, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(filtered)) + _png_chunk(b"IEND", b""))


def _tiff_header_only(rows, cols):
    """A little-endian TIFF whose single IFD claims rows x cols 8-bit gray, with no data."""
    tags = [(256, 4, cols), (257, 4, rows), (258, 3, 8), (259, 3, 1), (262, 3, 1),
            (273, 4, 8), (278, 4, rows), (279, 4, rows * cols)]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def _tiff_bytes(array, **kwargs):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)


def test_png_round_trip_via_path(tmp_path, rgb):
    path = tmp_path / "a.png"
    data = write_image(path, rgb)
    assert path.read_bytes() == data
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(read_image(str(path)), rgb)


def test_tiff_round_trip_tifffile_and_pil_lzw(rgb):
    np.testing.assert_array_equal(read_image(_tiff_bytes(rgb, photometric="rgb")), rgb)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="TIFF", compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(buffer.getvalue()), rgb)


def test_jpeg_reads_close_to_original():
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 200, 48, dtype=np.uint8)
    smooth[..., 1] = 100
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, format="JPEG", quality=95)
    out = read_image(buffer.getvalue())
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).mean() < 3


def test_16bit_gray_png_rescaled_by_hand():
    gray = np.array([[0, 250, 1000], [500, 999, 3]], np.uint16)
    out = read_image(encode_png(gray))
    # value * 255 / 1000, to the nearest integer: 63.75 -> 64, 127.5 -> 128, 254.745 -> 255, 0.765 -> 1
    np.testing.assert_array_equal(out[..., 0], [[0, 64, 255], [128, 255, 1]])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16bit_rgb_png_keeps_low_bits():
    # Pillow alone would keep only the high byte (4000 -> 15); every PNG filter type is used.
    values = np.array([[[1000, 2000, 4000], [0, 500, 4000], [4000, 10, 2]]] * 5, ">u2")
    bpp, prev, lines = 6, np.zeros(18, int), []
    for row in range(5):
        x = np.frombuffer(values[row].tobytes(), np.uint8).astype(int)
        a = np.concatenate([[0] * bpp, x[:-bpp]])
        b, c = prev, np.concatenate([[0] * bpp, prev[:-bpp]])
        p = a + b - c
        paeth = np.where((abs(p - a) <= abs(p - b)) & (abs(p - a) <= abs(p - c)), a,
                         np.where(abs(p - b) <= abs(p - c), b, c))
        pred = [0 * a, a, b, (a + b) // 2, paeth][row]
        lines.append(bytes([row]) + ((x - pred) & 255).astype(np.uint8).tobytes())
        prev = x
    out = read_image(_png(5, 3, 16, 2, b"".join(lines)))
    expected = np.floor(values.astype(float) * 255 / 4000 + 0.5)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0].tolist() == [64, 128, 255]


def test_16bit_rgb_tiff_rescaled():
    values = np.array([[[100, 200, 400]]], np.uint16)
    assert read_image(_tiff_bytes(values, photometric="rgb"))[0, 0].tolist() == [64, 128, 255]


def test_grayscale_replicated_and_rgba_drops_alpha(rgb):
    gray = rgb[..., 0]
    out = read_image(encode_png(gray))
    assert out.shape == (30, 40, 3) and all((out[..., i] == gray).all() for i in range(3))
    rgba = np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])
    np.testing.assert_array_equal(read_image(encode_png(rgba)), rgb)


def test_read_mask_any_nonzero_colour_and_shape(tmp_path):
    colour = np.zeros((6, 7, 3), np.uint8)
    colour[1, 2] = (0, 0, 9)
    colour[3, 4] = (255, 0, 0)
    mask = read_mask(encode_png(colour), shape=(6, 7, 3))
    assert mask.dtype == bool and mask.sum() == 2 and mask[1, 2] and mask[3, 4]
    path = tmp_path / "m.png"
    write_mask(path, mask)
    assert set(np.unique(np.asarray(Image.open(path))).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_mask(path), mask)


def test_mask_shape_mismatch_names_file(tmp_path):
    path = tmp_path / "cells_mask.png"
    write_mask(path, np.ones((5, 5), bool))
    with pytest.raises(ImageError, match=r"cells_mask\.png.*5 x 5.*8 x 5"):
        read_mask(path, shape=(8, 5))


@pytest.mark.parametrize("data, problem", [
    (b"hello, I am text and not a picture", "not a PNG, TIFF or JPEG"),
    (b"GIF89a" + bytes(40), "GIF"),
    (b"", "empty"),
])
def test_not_an_image(data, problem):
    with pytest.raises(ImageError, match=f"upload.bin.*{problem}"):
        read_image(data, name="upload.bin")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageError, match="nowhere.png.*not found"):
        read_image(tmp_path / "nowhere.png")


def test_truncated_png(rgb):
    data = encode_png(rgb)
    for cut in (20, len(data) // 2, len(data) - 5):
        with pytest.raises(ImageError, match="slice.png is truncated"):
            read_image(data[:cut], name="slice.png")


def test_truncated_16bit_png():
    data = _png(4, 4, 16, 2, bytes(4 * (1 + 24)))
    idat_end = data.index(b"IEND") - 4
    cut = data[:idat_end - 8] + data[idat_end:]  # IDAT length no longer matches: IEND never reached
    with pytest.raises(ImageError, match="deep.png is truncated"):
        read_image(cut, name="deep.png")


def test_truncated_tiff(rgb):
    data = _tiff_bytes(rgb, photometric="rgb")
    for cut in (6, len(data) // 2):
        with pytest.raises(ImageError, match="scan.tif is truncated"):
            read_image(data[:cut], name="scan.tif")


def test_truncated_jpeg(rgb):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    with pytest.raises(ImageError, match="photo.jpg is truncated"):
        read_image(buffer.getvalue()[:300], name="photo.jpg")


def test_zero_sized_png_and_tiff():
    with pytest.raises(ImageError, match="flat.png is zero-sized"):
        read_image(_png(0, 10, 8, 0, b""), name="flat.png")
    with pytest.raises(ImageError, match="flat.tif is zero-sized"):
        read_image(_tiff_header_only(0, 10), name="flat.tif")


def test_megapixel_guard_from_headers_only():
    side = int(MAX_PIXELS**0.5) + 100  # just over the limit; no pixel data exists at all
    with pytest.raises(ImageError, match="bomb.png .*megapixel"):
        read_image(_png(side, side, 8, 2, b""), name="bomb.png")
    with pytest.raises(ImageError, match="bomb.tif .*megapixel"):
        read_image(_tiff_header_only(side, side), name="bomb.tif")


def test_pil_bomb_guard_becomes_image_error(monkeypatch, rgb):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="small.jpg .*decompression-bomb"):
        read_image(buffer.getvalue(), name="small.jpg")


def test_writers_validate_and_encode_without_path(rgb):
    assert write_image(None, rgb)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="uint8"):
        write_image(None, rgb.astype(np.float32))
    with pytest.raises(ValueError, match="PNG"):
        write_image("x.jpg", rgb)


def test_pillow_bomb_warning_does_not_refuse_images_below_max_pixels(monkeypatch):
    """Pillow warns from ~89 MP; our own limit is 100 MP, so its warning must not refuse.

    Scaled down: Pillow's level set to 1,000 px, an image of 1,600 px (warning range,
    below Pillow's hard error at twice the level) still reads.
    """
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    gray = np.full((40, 40), 7, dtype=np.uint8)
    out = read_image(encode_png(gray), name="big.png")
    assert out.shape == (40, 40, 3) and int(out.max()) == 7


def test_written_files_get_the_umask_mode(tmp_path):
    import os
    import stat

    from core.io import write_mask

    old = os.umask(0o027)
    try:
        write_mask(tmp_path / "m.png", np.ones((3, 3), bool))
        assert stat.S_IMODE((tmp_path / "m.png").stat().st_mode) == 0o640
    finally:
        os.umask(old)
