"""``python -m core count``: count cells in image files, without the app or a database.

::

    python -m core count IMAGES... [--model RUN_DIR] --out counts.csv

IMAGES are files or directories (a directory stands for the PNG, TIFF and JPEG files directly
inside it, sorted by name). Without ``--model`` each image gets the automatic threshold mask
(:func:`core.prelabel.auto_mask`) split into cells by the same watershed as the model's output
(:func:`core.postprocess.mask_to_labels`); with ``--model`` the run directory's network predicts
a heatmap, cut at the run's chosen threshold with the run's post-processing params.

The CSV has one row per image, columns ``file,count,method,threshold,error``:

- ``method`` is ``auto:<threshold method>`` (e.g. ``auto:li``) or ``model:<run name>``;
- ``threshold`` is the run's chosen heatmap threshold, and blank for automatic counting:
  ``auto_mask`` picks its threshold per image on a denoised, background-subtracted signal, a
  number on another scale that says nothing comparable between images, so it is not reported;
- ``error`` is the sentence saying why an image was not counted (``count`` is then blank).

Rows are written as images finish, so an interrupted batch keeps what it counted. Exit status:
0 when every image was attempted and at least one counted (unreadable ones have their rows),
1 when none could be counted, 2 for usage errors (argparse's convention).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.plaintext import write_csv

__all__ = ["main", "build_parser", "expand_inputs", "Counter", "auto_counter", "model_counter",
           "COLUMNS", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

COLUMNS = ("file", "count", "method", "threshold", "error")
#: What a directory given as IMAGES contributes (compared lower-case).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Counter:
    """How images are counted: the CSV's ``method`` and ``threshold`` and the counting function.

    Attributes
    ----------
    method : str
        ``auto:<threshold method>`` or ``model:<run name>``.
    threshold : str
        The CSV's threshold cell (blank for automatic counting).
    count : callable
        uint8 RGB image -> number of cells.
    """

    method: str
    threshold: str
    count: Callable


def auto_counter(method="li", *, cell_diameter=50.0, preset="paper") -> Counter:
    """Count with the automatic threshold mask and the watershed split.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage.draw import disk
    >>> rgb = np.zeros((120, 120, 3), np.uint8)
    >>> for centre in [(30, 30), (30, 90), (90, 60)]:
    ...     rgb[disk(centre, 15)] = (200, 160, 14)
    >>> counter = auto_counter("li", cell_diameter=30)
    >>> counter.method, counter.count(rgb)
    ('auto:li', 3)
    """
    from core.postprocess import PostprocessParams, mask_to_labels
    from core.prelabel import PrelabelParams, auto_mask

    prelabel = PrelabelParams(method=method)
    split = PostprocessParams.from_preset(preset, cell_diameter=cell_diameter)

    def count(rgb) -> int:
        # mask_to_labels numbers cells 1..n without gaps, so the maximum is the count.
        return int(mask_to_labels(auto_mask(rgb, prelabel), split).max())

    return Counter(method=f"auto:{method}", threshold="", count=count)


def model_counter(run_dir) -> Counter:
    """Count with a trained run: its heatmap, chosen threshold and post-processing.

    Raises
    ------
    ValueError
        The run directory is missing, incomplete or damaged (the message says which file).
    """
    from core.postprocess import heatmap_to_labels
    from core.predict import predict_heatmap
    from core.run import load_run

    run = load_run(run_dir)

    def count(rgb) -> int:
        prob = predict_heatmap(run.model, rgb)
        return int(heatmap_to_labels(prob, run.postprocess, threshold=run.threshold).max())

    return Counter(method=f"model:{run.name}", threshold=f"{run.threshold:g}", count=count)


def expand_inputs(paths) -> list[Path]:
    """Files as given, directories replaced by the images directly inside them, sorted.

    A path that does not exist is kept, so its row says "file not found" like any other
    unreadable file.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        inside = sorted(p for p in path.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and not p.name.startswith("."))
        if not inside:
            log.warning("%s holds no PNG, TIFF or JPEG file", path)
        files.extend(inside)
    return files


def build_parser() -> argparse.ArgumentParser:
    from core.postprocess import REFERENCE_DIAMETER
    from core.prelabel import METHODS

    parser = argparse.ArgumentParser(prog="python -m core", description="CellTally science tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    count = commands.add_parser(
        "count", help="count cells in images and write a CSV",
        description="Count cells per image: the automatic mask and watershed split, or a trained "
                    "run (--model). Unreadable files get a row with their error.",
        epilog="CSV columns: file,count,method,threshold,error. threshold is the run's chosen "
               "threshold, blank for automatic counting (its threshold is per image and on "
               "another scale).")
    count.add_argument("images", nargs="+", metavar="IMAGES",
                       help="image files or directories of images (PNG, TIFF, JPEG)")
    count.add_argument("--out", required=True, type=Path, help="CSV file to write")
    count.add_argument("--model", type=Path, metavar="RUN_DIR", help="a trained run directory")
    count.add_argument("--method", choices=METHODS,
                       help="automatic threshold method (default li; without --model only)")
    count.add_argument("--cell-diameter", type=float, metavar="PX",
                       help=f"expected cell diameter for the split (default "
                            f"{REFERENCE_DIAMETER:g}; without --model only)")
    count.add_argument("--preset", choices=("paper", "fnc_v2"),
                       help="post-processing preset (default paper; without --model only)")
    count.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    count.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _counter_from_args(parser, args) -> Counter:
    """The counter the arguments ask for; usage errors exit through ``parser.error`` (status 2)."""
    from core.postprocess import REFERENCE_DIAMETER

    auto_only = [name for name in ("method", "cell_diameter", "preset")
                 if getattr(args, name) is not None]
    if args.model is not None:
        if auto_only:
            options = ", ".join("--" + n.replace("_", "-") for n in auto_only)
            parser.error(f"{options} only apply without --model: a run carries its own threshold "
                         "and post-processing")
        try:
            return model_counter(args.model)
        except ValueError as exc:
            parser.error(str(exc))
    diameter = REFERENCE_DIAMETER if args.cell_diameter is None else args.cell_diameter
    if not diameter > 0:
        parser.error(f"--cell-diameter must be a positive number of pixels, got {diameter:g}")
    return auto_counter(args.method or "li", cell_diameter=diameter, preset=args.preset or "paper")


def _count_one(path: Path, counter: Counter) -> dict:
    """One CSV row; an unreadable or failing image gets its error instead of a count."""
    from core.io import ImageError, read_image

    row = {"file": str(path), "count": "", "method": counter.method,
           "threshold": counter.threshold, "error": ""}
    try:
        row["count"] = counter.count(read_image(path))
    except ImageError as exc:
        row["error"] = str(exc)
        log.warning("%s", exc)
    except Exception as exc:  # one bad image must not stop a batch of hundreds
        row["error"] = f"{path.name}: counting failed ({type(exc).__name__}: {exc})."
        log.exception("counting %s failed", path)
    return row


def _count(args, counter: Counter) -> int:
    """Count every file into the CSV; return the exit status."""
    from tqdm import tqdm

    files = expand_inputs(args.images)
    if not files:
        log.error("no images to count in %s", " ".join(args.images))
        return 1
    counted = 0

    def rows():
        nonlocal counted
        # disable=None hides the bar when stderr is not a terminal (batch logs stay clean).
        for path in tqdm(files, desc="counting", unit="image", file=sys.stderr,
                         disable=True if args.quiet else None):
            row = _count_one(path, counter)
            counted += row["error"] == ""
            yield row

    with args.out.open("w", newline="", encoding="utf-8") as fh:
        write_csv(fh, COLUMNS, rows(), flush=True)
    failed = len(files) - counted
    print(f"counted {counted} of {len(files)} images ({failed} not counted) with "
          f"{counter.method}; wrote {args.out}")
    return 0 if counted else 1


def main(argv=None) -> int:
    """Entry point of ``python -m core``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.out.parent.is_dir():
        parser.error(f"--out: the folder {args.out.parent} does not exist; create it first")
    counter = _counter_from_args(parser, args)
    return _count(args, counter)
