"""core.io: round trips, depth and channel handling, and every bad-input message."""
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import skimage.draw
import tifffile
from PIL import Image

from core.io import (
    MAX_PIXELS,
    ImageError,
    ReadOptions,
    encode_png,
    read_image,
    read_mask,
    read_microscopy,
    write_image,
    write_mask,
)

ROOT = Path(__file__).resolve().parents[2]


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


def test_16bit_gray_png_scaled_by_container_depth_by_hand():
    gray = np.array([[0, 128, 129], [32896, 65535, 1000]], np.uint16)
    out = read_image(encode_png(gray))
    # value * 255 / 65535 (= value / 257), nearest integer: 0.498 -> 0, 0.502 -> 1, 3.89 -> 4
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 1], [128, 255, 4]])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_16bit_image_is_not_stretched_by_its_maximum(rng):
    dim = rng.integers(0, 1001, (20, 30)).astype(np.uint16)
    dim[0, 0] = 1000
    read = read_microscopy(_tiff_bytes(dim))
    assert read.rgb.max() == 4  # 1000 / 257; stretching by the maximum would give 255
    assert read.info.scaling == "container depth" and "65535" in read.info.scaling_note
    bright = read_image(encode_png(dim * 60))  # the same field, 60x brighter
    assert bright.max() == 233 and bright.mean() > 20 * read.rgb.mean()


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
    read = read_microscopy(_png(5, 3, 16, 2, b"".join(lines)),
                           options=ReadOptions(display_range=(0, 4000)))
    expected = np.floor(values.astype(float) * 255 / 4000 + 0.5)
    np.testing.assert_array_equal(read.rgb, expected)
    assert read.rgb[0, 0].tolist() == [64, 128, 255] and read.info.scaling == "display range"


def test_16bit_rgb_tiff_scaled_by_container_depth():
    values = np.array([[[2570, 5140, 65535]]], np.uint16)
    assert read_image(_tiff_bytes(values, photometric="rgb"))[0, 0].tolist() == [10, 20, 255]


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


# --- Microscopy files: channels, planes, bit depth, compression, pixel size -----------------

def _ome(array, axes, **metadata):
    return _tiff_bytes(array, ome=True, photometric="minisblack",
                       metadata={"axes": axes, **metadata})


def _shapes(rows=40, cols=50):
    """Three different filled shapes, one per channel: a disk, a rectangle, an ellipse."""
    masks = np.zeros((3, rows, cols), bool)
    masks[0][skimage.draw.disk((12, 14), 8, shape=(rows, cols))] = True
    masks[1][skimage.draw.rectangle((20, 25), (35, 45), shape=(rows, cols))] = True
    masks[2][skimage.draw.ellipse(28, 12, 6, 9, shape=(rows, cols))] = True
    return masks


@pytest.mark.parametrize("channels", [2, 3])
def test_ome_tiff_reads_the_chosen_channel(channels):
    masks = _shapes()[:channels]
    names = ["DAPI", "GFP", "Cy5"][:channels]
    data = _ome(masks.astype(np.uint16) * 65535, "CYX", Channel={"Name": names})
    for k in range(channels):
        read = read_microscopy(data, options=ReadOptions(channel=k))
        np.testing.assert_array_equal(read.rgb[..., 0] == 255, masks[k])
        assert set(np.unique(read.rgb).tolist()) == {0, 255}
        assert read.info.format == "OME-TIFF" and names[k] in read.info.channels
    refusal = rf"cells\.ome\.tif has {channels} channels \(0: DAPI, 1: GFP.*--channel K"
    with pytest.raises(ImageError, match=refusal):
        read_image(data, name="cells.ome.tif")
    with pytest.raises(ImageError, match=rf"cells\.ome\.tif has {channels} channels.*7 does not"):
        read_microscopy(data, name="cells.ome.tif", options=ReadOptions(channel=7))


def test_composition_and_stain_colours():
    masks = _shapes()
    data = _ome(masks.astype(np.uint8) * 200, "CYX")
    read = read_microscopy(data, options=ReadOptions(composition=(2, None, 0)))
    np.testing.assert_array_equal(read.rgb[..., 0], masks[2] * 200)
    np.testing.assert_array_equal(read.rgb[..., 1], 0)
    np.testing.assert_array_equal(read.rgb[..., 2], masks[0] * 200)
    yellow = read_microscopy(data, options=ReadOptions(channel=1, stain="yellow")).rgb
    dark = np.zeros_like(masks[1])
    np.testing.assert_array_equal(yellow, np.dstack([masks[1] * 200, masks[1] * 200, dark]))


def test_rgb_stays_rgb_unless_a_channel_is_chosen(rgb):
    data = encode_png(rgb)
    np.testing.assert_array_equal(read_microscopy(data).rgb, rgb)
    green = read_microscopy(data, options=ReadOptions(channel=1))
    np.testing.assert_array_equal(green.rgb, np.dstack([rgb[..., 1]] * 3))
    assert green.info.channels == "channel 1 (green) in grey"


def test_12bit_noise_field_with_significant_bits_reads_dim(rng):
    noise = rng.integers(0, 165, (64, 64)).astype(np.uint16)
    noise[5, 5] = 164  # max 164 of 4095: no cell, only camera noise
    read = read_microscopy(_ome(noise, "YX", SignificantBits=12))
    assert read.rgb.mean() < 20 and read.rgb.max() == 10  # 164 * 255 / 4095 = 10.2
    np.testing.assert_array_equal(read.rgb[..., 0], np.floor(noise * 255.0 / 4095 + 0.5))
    assert read.info.scaling == "significant bits" and read.info.bits == 12
    assert "OME SignificantBits" in read.info.scaling_note


def test_12bit_tiff_bits_per_sample(rng):
    values = rng.integers(0, 4096, (16, 24)).astype(np.uint16)
    read = read_microscopy(_tiff_bytes(values, bitspersample=12))
    np.testing.assert_array_equal(read.rgb[..., 0], np.floor(values * 255.0 / 4095 + 0.5))
    assert "TIFF BitsPerSample" in read.info.scaling_note


def test_png_sbit_shifts_away_the_unused_low_bits(rng):
    original = rng.integers(0, 4096, (6, 7)).astype(np.uint16)
    stored = (original << 4) | (original >> 8)  # the PNG standard's scaling to 16 bits
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in stored)
    png = _png(6, 7, 16, 0, rows)
    png = png[:33] + _png_chunk(b"sBIT", bytes([12])) + png[33:]
    read = read_microscopy(png)
    np.testing.assert_array_equal(read.rgb[..., 0], np.floor(original * 255.0 / 4095 + 0.5))
    assert read.info.scaling == "significant bits" and "PNG sBIT" in read.info.scaling_note


def test_display_range_applies_to_any_depth():
    values = np.array([[50, 100, 175, 250, 255]], np.uint8)
    read = read_microscopy(encode_png(values), options=ReadOptions(display_range=(100, 250)))
    assert read.rgb[0, :, 0].tolist() == [0, 0, 128, 255, 255]  # 75 * 255 / 150 = 127.5 -> 128


@pytest.mark.parametrize("compression", ["zstd", "lzw", "zlib", "jpegxr"])
def test_compressed_tiffs_read(rng, compression, rgb):
    np.testing.assert_array_equal(
        read_image(_tiff_bytes(rgb, photometric="rgb", compression=compression)), rgb)
    deep = rng.integers(0, 65536, (30, 40)).astype(np.uint16)
    out = read_image(_tiff_bytes(deep, compression=compression), name=f"{compression}.tif")
    np.testing.assert_array_equal(out[..., 0], np.floor(deep / 257 + 0.5))


def test_floating_point_tiff(rng):
    unit = rng.random((10, 12)).astype(np.float32)
    unit[0, 0] = 1.0
    np.testing.assert_array_equal(read_image(_tiff_bytes(unit))[..., 0],
                                  np.floor(unit.astype(np.float64) * 255 + 0.5))
    with pytest.raises(ImageError, match=r"photons\.tif holds floating-point values up to 40.*"
                                         r"--display-range"):
        read_image(_tiff_bytes(unit * 40), name="photons.tif")
    ranged = read_microscopy(_tiff_bytes(unit * 40), options=ReadOptions(display_range=(0, 40)))
    assert abs(ranged.rgb[..., 0].astype(int) - np.floor(unit * 255 + 0.5)).max() <= 1


def test_pixel_size_from_ome_and_imagej():
    plane = np.zeros((8, 9), np.uint16)
    ome = _ome(plane, "YX", PhysicalSizeX=0.4, PhysicalSizeXUnit="\u00b5m", PhysicalSizeY=500,
               PhysicalSizeYUnit="nm")
    assert read_microscopy(ome).info.pixel_size_um == pytest.approx((0.5, 0.4))
    # ImageJ stores pixels per unit: 4 px/um across (0.25 um), 2 px/um down (0.5 um).
    imagej = _tiff_bytes(plane, imagej=True, resolution=(4.0, 2.0), metadata={"unit": "um"})
    read = read_microscopy(imagej)
    assert read.info.pixel_size_um == pytest.approx((0.5, 0.25))
    assert read.info.format == "ImageJ TIFF"
    assert read_microscopy(encode_png(plane)).info.pixel_size_um is None


def test_multipage_tiff_without_z_is_refused():
    pages = [Image.fromarray(np.full((8, 9), i, np.uint8)) for i in range(3)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageError, match=r"stack\.tif is a multi-page TIFF of 3 pages.*--z K.*"
                                         r"--z max"):
        read_image(buffer.getvalue(), name="stack.tif")
    read = read_microscopy(buffer.getvalue(), options=ReadOptions(z=1))
    assert read.info.z == "plane 1 of 3 (counting from 0)" and (read.rgb == 1).all()
    with pytest.raises(ImageError, match=r"stack\.tif .*plane 3 does not exist"):
        read_microscopy(buffer.getvalue(), name="stack.tif", options=ReadOptions(z=3))


def test_z_max_projection_equals_numpy_max(rng):
    stack = rng.integers(0, 256, (5, 2, 16, 20)).astype(np.uint8)
    data = _tiff_bytes(stack, imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(ImageError, match=r"zs\.tif is a Z-stack of 5 planes"):
        read_microscopy(data, name="zs.tif", options=ReadOptions(channel=1))
    read = read_microscopy(data, options=ReadOptions(channel=1, z="max"))
    np.testing.assert_array_equal(read.rgb[..., 0], stack[:, 1].max(axis=0))
    assert read.info.z == "maximum projection over 5 planes"
    plane = read_microscopy(data, options=ReadOptions(channel=0, z=3)).rgb[..., 2]
    np.testing.assert_array_equal(plane, stack[3, 0])


def test_time_series_is_refused():
    data = _tiff_bytes(np.zeros((3, 8, 9), np.uint16), imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(ImageError, match=r"movie\.tif holds 3 time points"):
        read_image(data, name="movie.tif")


@pytest.mark.parametrize("head, vendor", [
    (b"ZISRAWFILE" + bytes(30), "Zeiss CZI"),
    (b"\xda\xce\xbe\x0a" + bytes(30), "Nikon ND2"),
    (b"\x70\x00\x00\x00\x10\x00\x00\x00\x2a" + bytes(30), "Leica LIF"),
])
def test_microscope_formats_are_refused_with_the_export_advice(head, vendor):
    with pytest.raises(ImageError, match=rf"slide\.x is a {vendor} file.*export it as OME-TIFF"):
        read_image(head, name="slide.x")


@pytest.mark.parametrize("kwargs", [
    {"channel": -1}, {"display_range": (5, 5)}, {"stain": "blue"},
    {"composition": (None, None, None)}, {"channel": 0, "composition": (0, 1, 2)}, {"z": "min"},
])
def test_read_options_refuse_nonsense(kwargs):
    with pytest.raises(ValueError):
        ReadOptions(**kwargs)


def test_read_options_from_text():
    assert ReadOptions.from_text(channel="1", display_range="100:4000", stain="yellow", z="2") == \
        ReadOptions(channel=1, display_range=(100.0, 4000.0), stain="yellow", z=2)
    for bad in ({"display_range": "100-4000"}, {"z": "top"}, {"channel": "one"}):
        with pytest.raises(ValueError):
            ReadOptions.from_text(**bad)


# --- PNG decoding and its size check ---------------------------------------------------------

def _old_decode_png16(data):
    """CellTally's hand-written 16-bit colour PNG decoder (kept here only to compare with)."""
    cols, rows, _, colour, _, _, _ = struct.unpack(">IIBBBBB", data[16:29])
    pos, idat = 8, b""
    while data[pos + 4:pos + 8] != b"IEND":
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    channels = {2: 3, 4: 2, 6: 4}[colour]
    bpp, width = channels * 2, cols * channels * 2
    lines = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(rows, width + 1)
    kinds, coded = lines[:, 0], lines[:, 1:].reshape(rows, -1, bpp).astype(np.int16)
    out = np.zeros((rows + 1, cols + 1, bpp), np.int16)
    for step in range(rows + cols - 1):
        r = np.arange(max(0, step - cols + 1), min(rows, step + 1))
        c = step - r
        a, b, ul = out[r + 1, c], out[r, c + 1], out[r, c]
        p = a + b - ul
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, ul))
        kind = kinds[r][:, None]
        pred = np.select([kind == 1, kind == 2, kind == 3, kind == 4],
                         [a, b, (a + b) // 2, paeth], 0)
        out[r + 1, c + 1] = (coded[r, c] + pred) & 0xFF
    raw = out[1:, 1:].astype(np.uint8).reshape(rows, width)
    return raw.view(">u2").reshape(rows, cols, channels).astype(np.uint16)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_png_decoder_matches_the_old_one(rng, channels):
    from core.io import _decode

    values = rng.integers(0, 65536, (37, 53, channels)).astype(np.uint16)
    values[:, :20] //= 64  # smooth-ish left part: libpng's adaptive filter picks several kinds
    data = imagecodecs.png_encode(values, filter=imagecodecs.PNG.FILTER.ALL)
    old = _old_decode_png16(data)
    np.testing.assert_array_equal(old, values)
    np.testing.assert_array_equal(_decode(data, "r.png"), old)


def _adam7_png(array, depth, colour, extra=b"", rows=None):
    """An interlaced PNG built by hand: each Adam7 pass's rows, filter 0, then ``extra`` bytes.

    ``rows`` puts another height in the header than the array has.
    """
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
              (1, 0, 2, 1))  # (first row, first column, row step, column step), from the PNG spec
    stream = b""
    for row0, col0, row_step, col_step in passes:
        sub = array[row0::row_step, col0::col_step]
        if sub.size:
            stream += b"".join(b"\x00" + row.astype(f">u{depth // 8}").tobytes() for row in sub)
    cols = array.shape[1]
    header = struct.pack(">IIBBBBB", cols, rows or array.shape[0], depth, colour, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(stream + extra)) + _png_chunk(b"IEND", b""))


def test_interlaced_png_size_check(rng):
    # 11 x 13 leaves some Adam7 passes short; the passes need more filter bytes than rows do.
    gray = rng.integers(0, 256, (11, 13)).astype(np.uint8)
    np.testing.assert_array_equal(read_image(_adam7_png(gray, 8, 0))[..., 0], gray)
    deep = rng.integers(0, 65536, (11, 13, 3)).astype(np.uint16)
    np.testing.assert_array_equal(read_image(_adam7_png(deep, 16, 2)), np.floor(deep / 257 + 0.5))
    with pytest.raises(ImageError, match=r"lace\.png: the PNG's compressed data is larger than its "
                                         r"13 x 11 header allows; export the image again"):
        read_image(_adam7_png(deep, 16, 2, extra=b"\x00"), name="lace.png")
    short = _adam7_png(deep[:10], 16, 2, rows=11)  # the last row's pass bytes are missing
    with pytest.raises(ImageError, match=r"lace\.png is truncated or damaged \(the pixel data is "
                                         r"shorter"):
        read_image(short, name="lace.png")


_BOMB_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
sys.path.insert(0, sys.argv[2])
from core.io import ImageError, read_image
try:
    read_image(sys.argv[1])
    outcome = "read"
except ImageError as exc:
    outcome = str(exc)
# ru_maxrss carries the parent's peak over exec on Linux, so the child's own is VmHWM.
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps({"outcome": outcome, "peak_kb": int(hwm[0]),
                  "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "heavy": [m for m in ("keras", "tensorflow", "onnxruntime")
                            if m in sys.modules]}))
"""


def _inflation_bomb(blocks):
    """A zlib stream of ``blocks`` x 16 MiB of zeros: identical blocks after full flushes."""
    zeros = bytes(16 << 20)
    packer = zlib.compressobj(9)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(blocks):
        checksum = zlib.adler32(zeros, checksum)
    # A final empty fixed-Huffman block (bits 1, 01, end code 0000000), then the Adler-32.
    return first + again * (blocks - 1) + b"\x03\x00" + struct.pack(">I", checksum)


def test_inflating_png_is_refused_early_in_bounded_memory(tmp_path):
    # The construction, checked small: 4 blocks inflate to exactly 64 MiB and end cleanly.
    inflater = zlib.decompressobj()
    small = inflater.decompress(_inflation_bomb(4))
    assert len(small) == 64 << 20 and inflater.eof and not small.count(1)
    idat = _inflation_bomb(64)  # 1 GiB of zeros in about 1 MB
    assert len(idat) < 1.1e6
    header = struct.pack(">IIBBBBB", 1000, 1000, 16, 2, 0, 0, 0)  # needs 6,001,000 bytes
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _BOMB_CHILD, str(path), str(ROOT)], env=env,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == ("bomb.png: the PNG's compressed data is larger than its 1000 x "
                                 "1000 header allows; export the image again")
    assert elapsed < 20
    assert report["peak_kb"] < 1 << 20
    assert report["heavy"] == []
