"""Benchmark: decoding a 1200x1600 16-bit RGB PNG, CellTally's old decoder against imagecodecs.

Issue 11 asked for imagecodecs instead of the hand-written 16-bit decoder, with identical output
(2.45 s against 0.19 s when the issue was filed). Both run here in one process on the same
file, so their ratio does not depend on the machine's load. The bench also prices the PNG size
check (inflating the IDAT stream up to the header's byte count before decoding) on the 16-bit
file and on an 8-bit RGB PNG of the same size, the kind the store reads most.

The image imitates a fluorescence photo: a smooth background, bright blobs and camera noise,
encoded by libpng's adaptive filters (imagecodecs' default), as microscope software writes them.
The old decoder is the copy kept in ``tests/core/test_io.py`` to check the new one against.

Run: ``.venv/bin/python bench/bench_io.py [--repeat 5]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import imagecodecs  # noqa: E402
import numpy as np  # noqa: E402

from common import machine_line, today  # noqa: E402
from core import io as core_io  # noqa: E402
from tests.core.test_io import _old_decode_png16  # noqa: E402


def _photo16(rows=1200, cols=1600, seed=0):
    """A 16-bit RGB fluorescence-like field: gradient, 40 Gaussian blobs, Poisson-ish noise."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float32)
    field = 800 + 400 * (c / cols) + 200 * (r / rows)
    for _ in range(40):
        cr, cc, s = rng.uniform(0, rows), rng.uniform(0, cols), rng.uniform(8, 20)
        field += 20000 * np.exp(-((r - cr) ** 2 + (c - cc) ** 2) / (2 * s * s))
    rgb = np.stack([field, field * 0.8, field * 0.1], axis=-1)
    rgb += rng.normal(0, 60, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 65535).astype(np.uint16)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{today()} {machine_line()}")
    deep = _photo16()
    png16 = imagecodecs.png_encode(deep)
    png8 = core_io.encode_png((deep >> 8).astype(np.uint8))
    new = core_io._decode(png16, "bench.png")
    old = _old_decode_png16(png16)
    assert np.array_equal(new, old) and np.array_equal(new, deep), "decoders disagree"
    print(f"16-bit RGB PNG 1200x1600: {len(png16) / 1e6:.1f} MB; both decoders give the same "
          "array as the one encoded")

    header, idat = core_io._png_chunks(png16, "bench.png")
    old = _medians(lambda: _old_decode_png16(png16), max(2, args.repeat // 2))
    new = _medians(lambda: core_io._decode(png16, "bench.png"), args.repeat)
    check = _medians(lambda: core_io._check_png_data(idat, header, "b"), args.repeat)
    print("median seconds, wall / CPU:")
    print(f"  old hand-written decoder:     {old[0]:6.3f} / {old[1]:6.3f}")
    print(f"  imagecodecs with size check:  {new[0]:6.3f} / {new[1]:6.3f}   -> old/new "
          f"{old[0] / new[0]:.1f}x wall, {old[1] / new[1]:.1f}x CPU")
    print(f"    of which the size check:    {check[0]:6.3f} / {check[1]:6.3f}")

    header8, idat8 = core_io._png_chunks(png8, "bench.png")
    read8 = _medians(lambda: core_io.read_image(png8), args.repeat)
    check8 = _medians(lambda: core_io._check_png_data(idat8, header8, "b"), args.repeat)
    print(f"8-bit RGB PNG 1200x1600 ({len(png8) / 1e6:.1f} MB):")
    print(f"  read_image:                   {read8[0]:6.3f} / {read8[1]:6.3f}")
    print(f"    of which the size check:    {check8[0]:6.3f} / {check8[1]:6.3f}")


def _medians(fn, repeat):
    """(median wall s, median CPU s) over ``repeat`` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)

if __name__ == "__main__":
    main()
