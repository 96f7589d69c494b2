"""Where the overlapping training crops of an image start (docs/METHOD.md section 5).

The paper cuts a 1600x1200 image into 12 crops of 512x512: columns start at 0, 288, 688 and 1088,
rows at 0, 288 and 688. Those numbers follow one rule, used here for every size: step back from the
far edge by a stride of 25/32 of the crop (400 px for 512) and clamp the last start to 0. Every pixel
is covered, neighbouring crops overlap by at least 7/32 of a crop, and the gaps are even except the
one next to the origin.
"""
from __future__ import annotations

import math

__all__ = ["crop_starts", "crop_grid", "crop_stride"]


def crop_stride(crop_size: int) -> int:
    """The step between crop starts: 25/32 of the crop, 400 px for the paper's 512.

    >>> crop_stride(512), crop_stride(64)
    (400, 50)
    """
    if crop_size < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    return max(1, round(crop_size * 25 / 32))


def crop_starts(length: int, crop_size: int) -> list[int]:
    """Start offsets of crops covering ``length`` pixels along one axis, in increasing order.

    Parameters
    ----------
    length : int
        Image side in pixels.
    crop_size : int
        Crop side in pixels. A side no longer than the crop gets the single start 0 (the loader
        pads such images).

    Returns
    -------
    list of int
        Starts ``s`` with ``0 <= s <= max(length - crop_size, 0)``; the first is 0 and the last
        is ``length - crop_size``.

    Examples
    --------
    >>> crop_starts(1600, 512)
    [0, 288, 688, 1088]
    >>> crop_starts(1200, 512)
    [0, 288, 688]
    >>> crop_starts(300, 512)
    [0]
    """
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    last = length - crop_size
    if last <= 0:
        return [0]
    stride = crop_stride(crop_size)
    n = math.ceil(last / stride) + 1
    return sorted(max(0, last - i * stride) for i in range(n))


def crop_grid(shape: tuple[int, ...], crop_size: int) -> list[tuple[int, int]]:
    """All ``(row, col)`` crop origins for an image of ``shape`` (rows first, as skimage does).

    >>> len(crop_grid((1200, 1600, 3), 512))
    12
    >>> crop_grid((100, 130), 64)
    [(0, 0), (0, 16), (0, 66), (36, 0), (36, 16), (36, 66)]
    """
    rows = crop_starts(int(shape[0]), crop_size)
    cols = crop_starts(int(shape[1]), crop_size)
    return [(r, c) for r in rows for c in cols]
