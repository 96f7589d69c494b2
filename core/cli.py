"""``python -m core``: count cells in image files and export runs, without the app or a database.

::

    python -m core count IMAGES... [--model RUN_DIR] --out counts.csv
                         [--dask-workers N | --scheduler ADDRESS] [--chunk-size N]
    python -m core export RUN_DIR [--out PACKAGE.zip] [--fnc] [--training-data TEXT]

IMAGES are files or directories (a directory stands for the PNG, TIFF and JPEG files directly
inside it, sorted by name). Without ``--model`` each image gets the automatic threshold mask
(:func:`core.prelabel.auto_mask`) split into cells by the same watershed as the model's output
(:func:`core.postprocess.mask_to_labels`); with ``--model`` the run directory's network predicts
a heatmap, cut at the run's chosen threshold with the run's post-processing params. The network
runs in ONNX Runtime from the run's ``model.onnx`` (Keras is the fallback), and then no
TensorFlow is imported. A run without ``model.onnx`` is converted once here on a full install;
a count-only install (``requirements-count.txt``) refuses it with the command to run.

The CSV has one row per image, columns ``file,count,method,threshold,error`` and, appended,
``check,model_sha256,version`` (:mod:`core.counting`):

- ``method`` is ``auto:<threshold method>`` (e.g. ``auto:li``) or ``model:<run name>``;
- ``threshold`` is the run's chosen heatmap threshold, and blank for automatic counting:
  ``auto_mask`` picks its threshold per image on a denoised, background-subtracted signal, a
  number on another scale that says nothing comparable between images, so it is not reported;
- ``error`` is the sentence saying why an image was not counted (``count`` is then blank);
- ``check`` says why a count is worth a look (objects near the threshold or of odd size).

``--dask-workers N`` counts on a local Dask cluster of N processes; ``--scheduler ADDRESS``
on an existing one (e.g. started by dask-jobqueue on Slurm). Each task counts a chunk of paths,
so the workers must see the images and the run on a shared file system. Rows are in input order
either way and are written as soon as every earlier row is known, so an interrupted batch keeps
what it counted. Exit status: 0 when every image was attempted and at least one counted
(unreadable ones have their rows), 1 when none could be counted, 2 for usage errors.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Iterator

from core.counting import (COLUMNS, Counter, CountSpec, build_counter, count_rows, dask_rows,
                           default_chunk_size, slots_per_host, software_version)
from core.plaintext import write_csv

__all__ = ["main", "build_parser", "expand_inputs", "Counter", "COLUMNS", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

#: What a directory given as IMAGES contributes (compared lower-case).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: Where a read-only run's converted model.onnx goes (the default data dir's cache).
DEFAULT_CACHE = Path("data") / "cache" / "onnx"


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


def _count_parser(commands) -> None:
    from core.postprocess import REFERENCE_DIAMETER
    from core.prelabel import METHODS

    count = commands.add_parser(
        "count", help="count cells in images and write a CSV",
        description="Count cells per image: the automatic mask and watershed split, or a trained "
                    "run (--model). Unreadable files get a row with their error.",
        epilog=f"CSV columns: {','.join(COLUMNS)}. threshold is the run's chosen threshold, "
               "blank for automatic counting (its threshold is per image and on another "
               "scale); check says why a count is worth a look.")
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
    where = count.add_mutually_exclusive_group()
    where.add_argument("--dask-workers", type=int, metavar="N",
                       help="count on a local Dask cluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="count on an existing Dask cluster (e.g. tcp://host:8786); the "
                            "workers must see IMAGES and RUN_DIR on a shared file system")
    count.add_argument("--chunk-size", type=int, metavar="N",
                       help="images per Dask task (default: four tasks per worker, at most 16)")
    count.add_argument("--backend", choices=("auto", "onnx", "keras"), default="auto",
                       help="auto: ONNX Runtime when the run has a model.onnx, else Keras "
                            "(default); keras forces the fallback (one process only)")
    count.add_argument("--no-overlap", dest="overlap", action="store_false",
                       help="do not read and post-process images while the network runs")
    count.add_argument("--threads", type=int, metavar="N",
                       help="ONNX Runtime threads per process (default: cores / workers)")
    count.add_argument("--cache-dir", type=Path, metavar="DIR", default=DEFAULT_CACHE,
                       help="where a read-only run's converted model.onnx is kept "
                            f"(default {DEFAULT_CACHE})")
    count.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    count.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def _export_parser(commands) -> None:
    export = commands.add_parser(
        "export", help="write a run's model.onnx, or a BioImage Model Zoo package",
        description="Convert a run's model.keras to model.onnx (once; needs a full install), "
                    "and with --out write a BioImage Model Zoo package (rdf.yaml, ONNX "
                    "weights, model.keras attached, test tensors, cover, README).")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a trained run directory")
    export.add_argument("--out", type=Path, metavar="PACKAGE.zip", help="the package to write")
    export.add_argument("--fnc", action="store_true",
                        help="Fluorescent Neuronal Cells data trained the run (CC BY-SA 4.0)")
    export.add_argument("--training-data", metavar="TEXT", default="",
                        help="one paragraph on the training data for the README (default: "
                             "the counts of the run's manifest)")
    export.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="CellTally science tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _count_parser(commands)
    _export_parser(commands)
    return parser


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _model_onnx(parser, args) -> str | None:
    """The run's ONNX file for the workers, converting it here once on a full install.

    None means Keras serves (no ONNX Runtime here; one process only). A count-only install
    (no Keras) and any Dask run refuse a run without one: workers never convert.
    """
    from core.exchange import ensure_onnx, find_onnx, missing_onnx_message

    found = find_onnx(args.model, cache_dir=args.cache_dir)
    if found is not None and _has_module("onnxruntime"):
        return str(found)
    if not _has_module("onnxruntime"):
        if args.dask_workers or args.scheduler:
            parser.error("counting on Dask needs ONNX Runtime: install requirements-count.txt")
        return None
    if not _has_module("keras"):
        parser.error(missing_onnx_message(args.model))
    return str(ensure_onnx(args.model, cache_dir=args.cache_dir.resolve()))


def _spec_from_args(parser, args) -> CountSpec:
    """The spec the arguments ask for; usage errors exit through ``parser.error`` (status 2)."""
    from core.postprocess import REFERENCE_DIAMETER
    from core.run import load_run

    auto_only = [name for name in ("method", "cell_diameter", "preset")
                 if getattr(args, name) is not None]
    if args.dask_workers is not None and args.dask_workers < 1:
        parser.error(f"--dask-workers must be 1 or more, got {args.dask_workers}")
    for name in ("chunk_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if args.model is not None:
        if auto_only:
            options = ", ".join("--" + n.replace("_", "-") for n in auto_only)
            parser.error(f"{options} only apply without --model: a run carries its own threshold "
                         "and post-processing")
        if args.backend == "keras" and (args.dask_workers or args.scheduler):
            parser.error("--backend keras counts in this process only; Dask workers run "
                         "model.onnx")
        try:
            run_dir = load_run(args.model, with_model=False).path
            args.model = run_dir
            onnx = None if args.backend == "keras" else _model_onnx(parser, args)
            return CountSpec(run_dir=str(run_dir), onnx=onnx, backend=args.backend,
                             overlap=args.overlap, threads=args.threads,
                             version=software_version())
        except ValueError as exc:
            parser.error(str(exc))
    diameter = REFERENCE_DIAMETER if args.cell_diameter is None else args.cell_diameter
    if not diameter > 0:
        parser.error(f"--cell-diameter must be a positive number of pixels, got {diameter:g}")
    return CountSpec(method=args.method or "li", cell_diameter=diameter,
                     preset=args.preset or "paper", overlap=args.overlap,
                     version=software_version())


def _dask_client(stack: contextlib.ExitStack, args):
    """A client of a new local cluster (``--dask-workers``) or of ``--scheduler``; both are
    closed when ``stack`` closes (a local cluster's workers stop with it)."""
    from distributed import Client, LocalCluster

    if not args.verbose:  # Dask logs every worker's start and stop at INFO
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.scheduler:
        return stack.enter_context(Client(args.scheduler))
    cluster = stack.enter_context(LocalCluster(n_workers=args.dask_workers, threads_per_worker=1,
                                               processes=True, dashboard_address=None))
    return stack.enter_context(Client(cluster))


def _rows(args, spec: CountSpec, counter: Counter, files: list) -> Iterator[dict]:
    """Rows in input order: counted here, or on Dask."""
    if not (args.dask_workers or args.scheduler):
        yield from count_rows(counter, files, overlap=spec.overlap)
        return
    with contextlib.ExitStack() as stack:
        client = _dask_client(stack, args)
        slots = slots_per_host(client)
        spec = dataclasses.replace(spec, slots_per_host=slots)
        size = args.chunk_size or default_chunk_size(len(files), sum(n for _, n in slots))
        log.info("counting %d images in chunks of %d on %d Dask slots", len(files), size,
                 sum(n for _, n in slots))
        yield from dask_rows(client, spec, [str(f) for f in files], chunk_size=size,
                             template=counter)


def _count(args, spec: CountSpec) -> int:
    """Count every file into the CSV; return the exit status."""
    from tqdm import tqdm

    files = expand_inputs(args.images)
    if not files:
        log.error("no images to count in %s", " ".join(args.images))
        return 1
    # Built here on Dask too: it checks the run before any worker starts, and gives the
    # CSV's fixed cells to rows of a chunk whose task died.
    counter = build_counter(spec)
    counted = 0
    # disable=None hides the bar when stderr is not a terminal (batch logs stay clean).
    bar = tqdm(total=len(files), desc="counting", unit="image", file=sys.stderr,
               disable=True if args.quiet else None)

    def rows():
        nonlocal counted
        for row in _rows(args, spec, counter, files):
            counted += row["error"] == ""
            bar.update()
            yield row

    # Every row is written (and flushed) as soon as every earlier one is known; text cells go
    # through core.plaintext so a file name never reaches a spreadsheet as a formula.
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        write_csv(fh, COLUMNS, rows(), flush=True)
    bar.close()
    failed = len(files) - counted
    print(f"counted {counted} of {len(files)} images ({failed} not counted) with "
          f"{counter.method}; wrote {args.out}")
    return 0 if counted else 1


def _export(parser, args) -> int:
    """Write model.onnx (converting once) and, with --out, the package."""
    from core.exchange import PackageInfo, ensure_onnx, export_package, find_onnx

    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out: the folder {args.out.parent} does not exist; create it first")
    if find_onnx(args.run_dir) is None and not _has_module("keras"):
        parser.error(f"{args.run_dir} has no model.onnx, and converting model.keras needs a "
                     "full install (requirements.txt)")
    try:
        onnx_file = ensure_onnx(args.run_dir)
        print(f"{args.run_dir}: {onnx_file}")
        if args.out is not None:
            info = PackageInfo(training_data=args.training_data, fnc=args.fnc)
            print(f"wrote {export_package(args.run_dir, args.out, info=info)}")
    except ValueError as exc:
        parser.error(str(exc))
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m core``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "export":
        return _export(parser, args)
    if not args.out.parent.is_dir():
        parser.error(f"--out: the folder {args.out.parent} does not exist; create it first")
    spec = _spec_from_args(parser, args)
    try:
        return _count(args, spec)
    except ValueError as exc:  # a run whose network cannot load here
        parser.error(str(exc))
