"""Counting image files into CSV rows: one process, or many on a Dask cluster.

What ``python -m core count`` does, kept apart from its argument parsing so Dask workers and the
app's count jobs count the same way:

- :class:`CountSpec` says how to count (a run's ``model.onnx`` or the automatic mask) in a form
  that pickles; each process builds its :class:`Counter` from it once (:func:`build_counter`).
- :func:`count_rows` counts paths one by one, reading the next image and post-processing the
  previous one while the network runs (ONNX Runtime releases the GIL).
- :func:`count_chunk` is one Dask task: a chunk of paths in, their rows out. A failing image is
  a row with its error; a chunk whose worker died becomes rows with that error, never a hole.
- :func:`dask_rows` hands chunks to a Dask cluster and yields rows in input order, each as soon
  as every earlier row is known.

Rows have the columns :data:`COLUMNS`: the historic ``file,count,method,threshold,error`` and,
appended, ``check`` (why the image is worth a look: objects near the threshold or of odd
size), ``model_sha256`` (of ``model.keras``, or of ``model.onnx`` when the run has only that)
and ``version`` (CellTally's).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

__all__ = ["COLUMNS", "BASE_COLUMNS", "CountSpec", "Counter", "build_counter", "count_rows",
           "count_chunk", "dask_rows", "slots_per_host", "default_chunk_size", "check_objects",
           "software_version", "VERSION", "NEAR_LOGIT", "ODD_DOUBT"]

log = logging.getLogger(__name__)

#: The columns every count CSV has had; new ones are only ever appended after them.
BASE_COLUMNS = ("file", "count", "method", "threshold", "error")
COLUMNS = BASE_COLUMNS + ("check", "model_sha256", "version")
VERSION = "0.4.0"
#: An object is near the threshold when its mean probability's log-odds lie within this of the
#: threshold's (a factor e in odds). Log-odds, because a linear distance says nothing at
#: thresholds such as 0.95, where every confident object is within 0.05.
NEAR_LOGIT = 1.0
#: An object is of odd size when core.objects.doubt rates its area this doubtful (1 = four times
#: larger or smaller than a typical cell of the run's diameter).
ODD_DOUBT = 1.0


@functools.lru_cache(maxsize=1)
def software_version() -> str:
    """CellTally's version, with the git commit when the code is a checkout (``0.4.0+g1a2b3c4``).

    >>> software_version().startswith(VERSION)
    True
    """
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return VERSION
    commit = done.stdout.strip()
    return f"{VERSION}+g{commit}" if done.returncode == 0 and commit else VERSION


@dataclass(frozen=True)
class CountSpec:
    """How to count, in a form that pickles (what a Dask task carries).

    Attributes
    ----------
    run_dir : str or None
        A run directory; None counts with the automatic threshold mask.
    onnx : str or None
        The run's ONNX file; given, the network is loaded from it and nothing is converted
        (workers). None: :func:`core.predict.load_network` picks the backend (Keras when there
        is no ONNX Runtime).
    backend : {"auto", "onnx", "keras"}
        ``keras`` forces the Keras fallback (one process; what ``bench/bench_count.py``
        compares with).
    overlap : bool
        Read the next image and post-process the previous one while the network runs.
    threads : int or None
        ONNX Runtime's intra-op threads; None = every core this process may use divided by the
        task slots on this host (``slots_per_host``).
    method, cell_diameter, preset
        Automatic counting: threshold method, expected cell diameter (px), split preset.
    slots_per_host : tuple of (host, slots)
        Dask task slots per host, so workers sharing a machine share its cores.
    version : str
        Software version written in every row.
    """

    run_dir: str | None = None
    onnx: str | None = None
    backend: str = "auto"
    overlap: bool = True
    threads: int | None = None
    method: str = "li"
    cell_diameter: float = 50.0
    preset: str = "paper"
    slots_per_host: tuple = ()
    version: str = VERSION


@dataclass(frozen=True)
class Counter:
    """A built counter: the CSV's fixed cells and the two steps of counting an image.

    Attributes
    ----------
    method : str
        ``auto:<threshold method>`` or ``model:<run name>``.
    threshold : str
        The run's chosen threshold as written in the CSV (blank for automatic counting).
    heatmap : callable or None
        uint8 RGB -> probability heatmap (the network step); None for automatic counting.
    labels : callable
        (uint8 RGB, heatmap or None) -> int32 labels of the counted cells.
    typical_area : float
        Area in px of a cell of the expected diameter (for ``check``).
    model_sha256, version : str
        Written in every row.
    """

    method: str
    threshold: str
    heatmap: Callable | None
    labels: Callable
    typical_area: float
    model_sha256: str = ""
    version: str = VERSION

    def count(self, rgb) -> int:
        """Cells in one image.

        >>> import numpy as np
        >>> from skimage.draw import disk
        >>> rgb = np.zeros((120, 120, 3), np.uint8)
        >>> for centre in [(30, 30), (30, 90), (90, 60)]:
        ...     rgb[disk(centre, 15)] = (200, 160, 14)
        >>> build_counter(CountSpec(cell_diameter=30)).count(rgb)
        3
        """
        prob = None if self.heatmap is None else self.heatmap(rgb)
        return int(self.labels(rgb, prob).max())


def _threshold_of(threshold: str) -> float | None:
    return float(threshold) if threshold else None


def check_objects(labels, prob, *, threshold: float | None, typical_area: float) -> str:
    """Why an image's count is worth a look, or "" when nothing stands out.

    Counts objects whose mean probability is near the threshold (log-odds within
    :data:`NEAR_LOGIT`) and objects whose size :func:`core.objects.doubt` rates as odd.

    Examples
    --------
    >>> lab = np.zeros((40, 40), np.int32); lab[2:12, 2:12] = 1; lab[20:22, 20:22] = 2
    >>> prob = np.where(lab == 1, 0.52, 0.99)
    >>> check_objects(lab, prob, threshold=0.5, typical_area=100.0)
    '1 near the threshold; 1 of odd size'
    """
    from core.objects import doubt, object_stats

    stats = object_stats(labels, prob)
    if stats.empty:
        return ""
    notes = []
    if prob is not None and threshold is not None and 0.0 < threshold < 1.0:
        p = np.clip(stats["mean_prob"].to_numpy(float), 1e-6, 1 - 1e-6)
        logit = np.log(p / (1 - p)) - math.log(threshold / (1 - threshold))
        near = int(np.sum(np.abs(logit) < NEAR_LOGIT))
        if near:
            notes.append(f"{near} near the threshold")
    # doubt without a probability rates size alone; its threshold then does not matter.
    odd = int(np.sum(doubt(np.nan, stats["area"].to_numpy(float), threshold=0.5,
                           typical_area=typical_area) >= ODD_DOUBT))
    if odd:
        notes.append(f"{odd} of odd size")
    return "; ".join(notes)


def _file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _model_counter(spec: CountSpec, threads: int | None) -> Counter:
    from core.predict import OnnxNetwork, load_network, predict_heatmap
    from core.run import load_run, model_sha256

    run = load_run(spec.run_dir, with_model=False)
    network = (OnnxNetwork(spec.onnx, threads=threads) if spec.onnx and spec.backend != "keras"
               else load_network(run.path, backend=spec.backend, threads=threads))
    sha = model_sha256(run.path) or (_file_sha256(Path(spec.onnx)) if spec.onnx else "")
    diameter = float(run.postprocess.cell_diameter)
    return Counter(method=f"model:{run.name}", threshold=f"{run.threshold:g}",
                   heatmap=functools.partial(predict_heatmap, network),
                   labels=lambda rgb, prob: run.labels(prob),
                   typical_area=math.pi * diameter ** 2 / 4, model_sha256=sha,
                   version=spec.version)


def _auto_counter(spec: CountSpec) -> Counter:
    from core.postprocess import PostprocessParams, mask_to_labels
    from core.prelabel import PrelabelParams, auto_mask

    prelabel = PrelabelParams(method=spec.method)
    split = PostprocessParams.from_preset(spec.preset, cell_diameter=spec.cell_diameter)
    return Counter(method=f"auto:{spec.method}", threshold="", heatmap=None,
                   labels=lambda rgb, prob: mask_to_labels(auto_mask(rgb, prelabel), split),
                   typical_area=math.pi * spec.cell_diameter ** 2 / 4, version=spec.version)


def _threads(spec: CountSpec) -> int | None:
    """ONNX Runtime threads for this process: the spec's, or this host's cores / its slots."""
    if spec.threads or not spec.slots_per_host:
        return spec.threads
    slots = dict(spec.slots_per_host).get(_this_host())
    if not slots:
        return None
    return max(1, len(os.sched_getaffinity(0)) // slots)


def _this_host() -> str:
    """This worker's host as the scheduler names it (its address), else the host name."""
    try:
        from distributed import get_worker

        return get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    except (ImportError, ValueError):
        return socket.gethostname()


@functools.lru_cache(maxsize=4)
def build_counter(spec: CountSpec) -> Counter:
    """The counter a spec describes, built once per process (networks load in seconds).

    Raises
    ------
    ValueError
        The run directory is missing, incomplete or damaged, or has no network this install
        can run (the message says what to do).
    """
    if spec.run_dir is None:
        return _auto_counter(spec)
    return _model_counter(spec, _threads(spec))


def _blank_row(path, counter: Counter) -> dict:
    return {"file": str(path), "count": "", "method": counter.method,
            "threshold": counter.threshold, "error": "", "check": "",
            "model_sha256": counter.model_sha256, "version": counter.version}


def _failed(row: dict, path: Path, exc: Exception) -> dict:
    from core.io import ImageError

    if isinstance(exc, ImageError):
        row["error"] = str(exc)
        log.warning("%s", exc)
    else:  # one bad image must not stop a batch of hundreds
        row["error"] = f"{Path(path).name}: counting failed ({type(exc).__name__}: {exc})."
        log.error("counting %s failed: %s", path, exc, exc_info=exc)
    return row


def _read(path):
    """(image, None) or (None, the exception): reading runs ahead in a thread."""
    from core.io import read_image

    try:
        return read_image(path), None
    except Exception as exc:  # reported in the image's row
        return None, exc


def _finish(counter: Counter, path, rgb, prob) -> dict:
    """The row of one image whose heatmap (if any) is known: labels, count, check."""
    row = _blank_row(path, counter)
    try:
        labels = counter.labels(rgb, prob)
        row["count"] = int(labels.max())
        row["check"] = check_objects(labels, prob, threshold=_threshold_of(counter.threshold),
                                     typical_area=counter.typical_area)
    except Exception as exc:
        return _failed(row, path, exc)
    return row


def count_rows(counter: Counter, paths: Iterable, *, overlap: bool = True) -> Iterator[dict]:
    """Count images one by one and yield their rows in order.

    With ``overlap`` the next image is read and the previous one post-processed in two
    threads while the network runs on the current one; the rows are the same either way.

    Examples
    --------
    >>> [r["error"] != "" for r in count_rows(build_counter(CountSpec()), ["/no/such.png"])]
    [True]
    """
    paths = list(paths)
    if not paths:
        return
    with ThreadPoolExecutor(max_workers=2 if overlap else 1) as pool:
        submit = pool.submit if overlap else _now
        reading = submit(_read, paths[0])
        finishing = None
        for i, path in enumerate(paths):
            rgb, error = reading.result()
            if i + 1 < len(paths):
                reading = submit(_read, paths[i + 1])
            if error is not None:
                step = _now(_failed, _blank_row(path, counter), Path(path), error)
            else:
                try:
                    prob = None if counter.heatmap is None else counter.heatmap(rgb)
                    step = submit(_finish, counter, path, rgb, prob)
                except Exception as exc:
                    step = _now(_failed, _blank_row(path, counter), Path(path), exc)
            if finishing is not None:
                yield finishing.result()
            finishing = step
        yield finishing.result()


class _Done:
    """A finished value with a Future's ``result()`` (the serial path's stand-in)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _now(fn, *args) -> _Done:
    return _Done(fn(*args))


def count_chunk(spec: CountSpec, paths: list) -> list[dict]:
    """One Dask task: the rows of a chunk of image paths (on a shared file system).

    A counter that cannot be built (the run is unreadable here) gives every path a row with
    that error.
    """
    try:
        counter = build_counter(spec)
    except Exception as exc:
        blank = Counter(method=f"model:{Path(spec.run_dir or '').name}", threshold="",
                        heatmap=None, labels=None, typical_area=1.0, version=spec.version)
        return [{**_blank_row(p, blank), "error": f"{Path(p).name}: the worker could not load "
                 f"the model ({type(exc).__name__}: {exc})."} for p in paths]
    return list(count_rows(counter, paths, overlap=spec.overlap))


def _chunks(paths: list, size: int) -> list[list]:
    return [paths[i:i + size] for i in range(0, len(paths), size)]


def slots_per_host(client) -> tuple:
    """(host, task slots) of a Dask cluster's workers, for :attr:`CountSpec.slots_per_host`."""
    slots: dict[str, int] = {}
    for address, info in client.scheduler_info()["workers"].items():
        host = address.split("://")[-1].rsplit(":", 1)[0]
        slots[host] = slots.get(host, 0) + int(info.get("nthreads", 1))
    return tuple(sorted(slots.items()))


def dask_rows(client, spec: CountSpec, paths: list, *, chunk_size: int,
              template: Counter) -> Iterator[dict]:
    """Count ``paths`` in chunks on a Dask cluster; yield rows in input order.

    Each row is yielded as soon as it and every earlier row are known. A chunk whose task
    failed outright (its worker died past Dask's retries) yields one row per path with the
    error, built from ``template`` (the parent's counter, for the CSV's fixed cells).
    """
    from distributed import as_completed

    chunks = _chunks(list(paths), max(1, int(chunk_size)))
    futures = {client.submit(count_chunk, spec, chunk, pure=False): i
               for i, chunk in enumerate(chunks)}
    done: dict[int, list[dict]] = {}
    next_chunk = 0
    for future in as_completed(futures):
        i = futures[future]
        try:
            done[i] = future.result()
        except Exception as exc:  # the task itself died: every image of it gets the error
            done[i] = [{**_blank_row(p, template), "error": f"{Path(p).name}: the Dask task "
                        f"failed ({type(exc).__name__}: {exc})."} for p in chunks[i]]
        while next_chunk in done:
            yield from done.pop(next_chunk)
            next_chunk += 1


def default_chunk_size(n_images: int, slots: int) -> int:
    """Images per Dask task: four tasks per slot for balance, at most 16 so rows keep flowing.

    >>> default_chunk_size(1000, 4), default_chunk_size(10, 4)
    (16, 1)
    """
    return max(1, min(16, math.ceil(n_images / max(1, 4 * slots))))
