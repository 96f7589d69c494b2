"""Full-image prediction: an RGB uint8 image in, a float32 probability heatmap out.

Images up to ``SINGLE_PASS_PIXELS`` (4 megapixels; a 1600x1200 FNC image is 1.9) go through the
network in one ``predict_on_batch`` call. Larger ones are cut into overlapping square tiles whose
centres are stitched together, so peak memory stays near that of one ~1500x1500 pass whatever the
image size.

Why ``predict_on_batch`` and never ``model(x)``: an eager call on a 1600x1200 image peaked at 5.9 GB
against 1.4 GB for ``predict_on_batch`` (the compiled predict step frees activations as it goes).

The network is anything with Keras's ``predict_on_batch(x) -> (batch, y, x, 1)``: a Keras model
(training, and the fallback) or an :class:`OnnxNetwork` (ONNX Runtime, what counting,
pre-labelling and the Predictions page use). :func:`load_network` picks one for a run
directory, the same way for every caller, so a run's evaluation, counts and pre-labels come from
the same backend.

Why tiles are exact: every tile starts at a multiple of 8 (so the three 2x2 poolings see the same
grid as a single pass) and only the part of a tile at least ``overlap`` pixels away from its cut
edges is kept. With ``overlap`` at or above the network's receptive-field radius (measured 94 px for
c-ResUnet; the default is 128) the stitched heatmap equals the single-pass one up to float
rounding.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["predict_heatmap", "OnnxNetwork", "load_network", "BACKENDS", "SINGLE_PASS_PIXELS",
           "DEFAULT_TILE", "DEFAULT_OVERLAP"]

log = logging.getLogger(__name__)

#: Images with at most this many pixels are predicted in one pass.
SINGLE_PASS_PIXELS = 4_000_000
#: Side of a square tile; 1536^2 = 2.4 MP, about one FNC image, whose single pass fits in 2 GB.
DEFAULT_TILE = 1536
#: Pixels discarded at each cut edge of a tile (>= receptive-field radius, multiple of 8).
DEFAULT_OVERLAP = 128
_MULTIPLE = 8  # three 2x2 poolings


#: ``auto``: ONNX Runtime when the run has (or, with Keras, can get) a model.onnx, else Keras.
BACKENDS = ("auto", "onnx", "keras")


class OnnxNetwork:
    """A run's ``model.onnx`` in ONNX Runtime, called like a Keras model.

    Parameters
    ----------
    path : path
        The ONNX file (``core.exchange``: input ``rgb`` (batch, y, x, 3) float32 in [0, 1],
        output ``heatmap`` (batch, y, x, 1)).
    threads : int, optional
        Intra-op threads; by default ONNX Runtime uses every core. Dask workers sharing a
        machine pass cores / workers.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from core.exchange import save_onnx
    >>> from core.model import build_cresunet
    >>> path = save_onnx(build_cresunet(2), pathlib.Path(tempfile.mkdtemp()) / "m.onnx")
    >>> OnnxNetwork(path, threads=1).predict_on_batch(np.zeros((1, 8, 16, 3), np.float32)).shape
    (1, 8, 16, 1)
    """

    backend = "onnx"

    def __init__(self, path, *, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # its warnings about unused initializers are noise here
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # A GPU build (onnxruntime-gpu) serves on CUDA; the plain wheel has the CPU only.
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def predict_on_batch(self, x) -> np.ndarray:
        """Probabilities (batch, y, x, 1) of float32 RGB (batch, y, x, 3) in [0, 1]."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def __repr__(self) -> str:
        return f"OnnxNetwork({str(self.path)!r})"


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_network(run_dir, *, backend: str = "auto", threads: int | None = None,
                 cache_dir=None, convert: bool = True):
    """The network a run directory predicts with, for :func:`predict_heatmap`.

    Parameters
    ----------
    run_dir : path
        A run directory (``core.run``).
    backend : {"auto", "onnx", "keras"}
        ``auto`` serves with ONNX Runtime when it is installed and the run has a current
        ``model.onnx`` (or one in ``cache_dir``); a run without one is converted first when
        Keras is installed and ``convert`` is true (once: the file is kept). Otherwise Keras.
    threads : int, optional
        ONNX Runtime's intra-op threads (see :class:`OnnxNetwork`).
    cache_dir : path, optional
        Where a read-only run's converted file goes (``core.exchange.ensure_onnx``).
    convert : bool
        False on count-only installs and Dask workers: never convert, only look.

    Returns
    -------
    OnnxNetwork or keras.Model

    Raises
    ------
    ValueError
        Neither backend can serve: the message says what to run (``python -m core export``).
    """
    from core.exchange import ensure_onnx, find_onnx, missing_onnx_message

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    run_dir = Path(run_dir)
    has_keras, has_ort = _has_module("keras"), _has_module("onnxruntime")
    if backend != "keras" and has_ort:
        path = find_onnx(run_dir, cache_dir=cache_dir)
        if path is None and convert and has_keras:
            path = ensure_onnx(run_dir, cache_dir=cache_dir)
        if path is not None:
            log.info("%s: predicting with ONNX Runtime (%s)", run_dir, path)
            return OnnxNetwork(path, threads=threads)
    if backend == "onnx" or not has_keras:
        if has_ort or backend == "keras":
            raise ValueError(missing_onnx_message(run_dir) if backend != "keras" else
                             f"{run_dir}: predicting with Keras needs a full install "
                             "(requirements.txt)")
        raise ValueError(f"{run_dir}: this install has neither ONNX Runtime nor Keras; "
                         "install requirements-count.txt")
    from core.run import load_run

    log.info("%s: predicting with Keras", run_dir)
    return load_run(run_dir).model


def _validate(rgb) -> np.ndarray:
    """Return ``rgb`` as an (H, W, 3) uint8 array or raise a ValueError saying what to do."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"predict_heatmap needs a NumPy array, got {type(rgb).__name__}; "
                         "read the image with core.io.read_image first")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"predict_heatmap needs an RGB image of shape (H, W, 3), got {rgb.shape}; "
                         "core.io.read_image converts grayscale and RGBA to RGB")
    if rgb.dtype != np.uint8:
        raise ValueError(f"predict_heatmap needs uint8 pixels (0-255), got {rgb.dtype}; "
                         "core.io.read_image rescales 16-bit images to uint8")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"predict_heatmap got an empty image of shape {rgb.shape}")
    return rgb


def _pad_to_multiple(x: np.ndarray, multiple: int = _MULTIPLE) -> np.ndarray:
    """Pad rows and columns at the bottom/right to a multiple of ``multiple`` by reflection.

    Reflection rather than zeros: the at most 7 added pixels then continue the local tissue
    texture, so the border pixels that are kept see context like interior ones instead of an
    artificial black edge that training crops never had.
    """
    h, w = x.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")


def _tile_windows(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """Cut one axis of padded ``length`` into (window start, keep start, keep stop) triples.

    Kept parts partition ``[0, length)``. Each window is ``min(tile, length)`` long, starts on a
    multiple of 8, and keeps only pixels at least ``overlap`` away from its cut (non-image) edges.

    >>> _tile_windows(40, 24, 8)
    [(0, 0, 8), (0, 8, 16), (8, 16, 24), (16, 24, 32), (16, 32, 40)]
    >>> _tile_windows(16, 24, 8)
    [(0, 0, 16)]
    """
    if length <= tile:
        return [(0, 0, length)]
    core = tile - 2 * overlap
    out = []
    for keep_start in range(0, length, core):
        keep_stop = min(keep_start + core, length)
        start = min(max(keep_start - overlap, 0), length - tile)
        out.append((start, keep_start, keep_stop))
    return out


def _to_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] directly (no float64 intermediate)."""
    return rgb.astype(np.float32) / np.float32(255.0)


def _predict_tiled(model, rgb: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """Predict a padded uint8 (H, W, 3) image tile by tile; return the (H, W) heatmap.

    Tiles are converted to float one at a time, so a 100-megapixel image never needs its
    1.2 GB float32 copy.
    """
    h, w = rgb.shape[:2]
    rows, cols = _tile_windows(h, tile, overlap), _tile_windows(w, tile, overlap)
    log.debug("tiling a %dx%d image into %d tiles of %d px", h, w, len(rows) * len(cols), tile)
    th, tw = min(tile, h), min(tile, w)
    out = np.empty((h, w), dtype=np.float32)
    # Every window has the same shape, so the compiled predict step is traced once.
    for r0, kr0, kr1 in rows:
        for c0, kc0, kc1 in cols:
            window = _to_float(rgb[None, r0:r0 + th, c0:c0 + tw])
            prob = np.asarray(model.predict_on_batch(window))[0, ..., 0]
            out[kr0:kr1, kc0:kc1] = prob[kr0 - r0:kr1 - r0, kc0 - c0:kc1 - c0]
    return out


def predict_heatmap(model, rgb_uint8, *, tile: int | None = None,
                    overlap: int = DEFAULT_OVERLAP) -> np.ndarray:
    """Probability heatmap of a whole image.

    Parameters
    ----------
    model : keras.Model or OnnxNetwork
        A c-ResUnet (``core.model.build_cresunet``, ``core.run.load_run(...).model`` or
        :func:`load_network`) taking float32 RGB in [0, 1] with sides that are multiples of 8.
    rgb_uint8 : ndarray (H, W, 3) uint8
        The image, any size. It is divided by 255, padded to a multiple of 8 by reflection,
        predicted, and cropped back.
    tile : int, optional
        Square tile side (a multiple of 8, more than ``2 * overlap``). By default images up to
        ``SINGLE_PASS_PIXELS`` go in one pass and larger ones use ``DEFAULT_TILE``; giving a value
        tiles any image with a side longer than it.
    overlap : int
        Pixels dropped at each cut tile edge (a multiple of 8). Keep it at or above the receptive
        field radius (about 100 px) for results equal to a single pass.

    Returns
    -------
    ndarray (H, W) float32
        Cell probability per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from core.model import build_cresunet
    >>> prob = predict_heatmap(build_cresunet(2), np.zeros((13, 21, 3), np.uint8))
    >>> prob.shape, prob.dtype
    ((13, 21), dtype('float32'))
    """
    rgb = _validate(rgb_uint8)
    h, w = rgb.shape[:2]
    if tile is not None and (tile % _MULTIPLE or overlap % _MULTIPLE or overlap < 0
                             or tile <= 2 * overlap):
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of 8 with "
                         "tile > 2 * overlap, e.g. tile=1536, overlap=128")
    padded = _pad_to_multiple(rgb)  # padding uint8 is exact and 4x cheaper than float32
    if tile is None and h * w > SINGLE_PASS_PIXELS:
        tile = DEFAULT_TILE
    if tile is None or (padded.shape[0] <= tile and padded.shape[1] <= tile):
        prob = np.asarray(model.predict_on_batch(_to_float(padded[None])))[0, ..., 0]
    else:
        prob = _predict_tiled(model, padded, tile, overlap)
    return np.ascontiguousarray(prob[:h, :w], dtype=np.float32)
