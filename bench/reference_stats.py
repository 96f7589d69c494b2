"""Compute ``core.synthetic.REFERENCE_STATS`` once from the FNC yellow reference crops.

The crops (``fnc_yellow_example_image_482x362.png`` and its 0/255 mask, see the README beside
them) are a 1600x1200 FNC image scaled down about 3.3 times, so areas are scaled by 3.3**2 to
full resolution; foreground %, colour ratios and background median need no scaling. The crops
are for looking at only and are not in this repository: this script prints the figures, which
are committed as constants, and is rerun only if the definition in ``image_stats`` changes.

Run: ``.venv/bin/python bench/reference_stats.py [--dir ../shared/reference-images]``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
from skimage import io  # noqa: E402

from core.synthetic import image_stats  # noqa: E402

SCALE = 3.3  # the crops' side is about 1/3.3 of the 1600x1200 original
IMAGE = "fnc_yellow_example_image_482x362.png"
MASK = "fnc_yellow_example_mask_482x362.png"


def reference_stats(folder: Path) -> dict:
    """``image_stats`` of the reference crop, areas scaled to full resolution."""
    rgb = io.imread(folder / IMAGE)[..., :3]
    mask = io.imread(folder / MASK)
    mask = (mask if mask.ndim == 2 else mask[..., 0]) > 0
    # One value: image_stats takes the mask's 8-connected components as its cells.
    stats = image_stats(rgb, mask.astype(np.uint8))
    stats["area_median"] *= SCALE**2
    stats["area_iqr"] *= SCALE**2
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT.parent / "shared" / "reference-images")
    folder = parser.parse_args().dir
    if not (folder / IMAGE).is_file():
        sys.exit(f"{folder / IMAGE} not found: pass --dir with the reference-images folder")
    stats = reference_stats(folder)
    print("REFERENCE_STATS = {")
    for key, value in stats.items():
        if isinstance(value, tuple):
            value = tuple(round(v, 3) for v in value)
        elif isinstance(value, float):
            value = round(value, 3)
        print(f"    {key!r}: {value!r},")
    print("}")


if __name__ == "__main__":
    main()
