"""A run's network as ONNX, and a run as a BioImage Model Zoo package.

``model.onnx`` is the same network as ``model.keras`` for ONNX Runtime (counting, pre-labelling,
the Predictions page) and for other tools (deepImageJ, QuPath, ilastik, bioimageio.core). The
graph has one input and one output::

    rgb       float32 (batch, y, x, 3)  RGB divided by 255, y and x multiples of 8 (64 or more
                                        for the package's test); batch, y and x are dynamic
    heatmap   float32 (batch, y, x, 1)  the sigmoid cell probability

Channels last, as the Keras model and every image file hold them; there is no /255 and no
padding inside the graph (``core.predict.predict_heatmap`` does both, for either backend).

The converter walks the Keras model's layer config and writes one ONNX node per layer from the
layers' weights (NumPy arrays), so it runs under any Keras backend (TensorFlow, JAX, PyTorch)
with only the ``onnx`` package beside Keras: no tf2onnx or jax2onnx. It knows the layers
c-ResUnet is built from and refuses any other with a sentence naming it.

A run without ``model.onnx`` (written before it existed) is converted once by
:func:`ensure_onnx` on a full install (one with Keras): into the run directory through a temp
file renamed into place, or, when that directory is read-only, into a cache directory the caller
names (the app uses ``<data dir>/cache/onnx``), keyed by the SHA-256 of ``model.keras``. The ONNX
file records that SHA-256, so a ``model.onnx`` left beside a replaced ``model.keras`` is noticed
and never used. Count-only installs and Dask workers never convert (:func:`find_onnx` only looks).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.io import default_file_mode

__all__ = ["keras_to_onnx", "save_onnx", "ensure_onnx", "find_onnx", "missing_onnx_message",
           "export_package", "PackageInfo", "ONNX_FILE", "INPUT_NAME", "OUTPUT_NAME", "OPSET",
           "KERAS_SHA_KEY"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INPUT_NAME = "rgb"
OUTPUT_NAME = "heatmap"
#: Opset 13 (ONNX Runtime 1.6, 2020, and later) holds every operator the network needs, so old
#: ONNX Runtime builds inside deepImageJ or QuPath still load the file.
OPSET = 13
_IR_VERSION = 7  # the IR version that goes with opset 13
#: Metadata key of the SHA-256 of the model.keras a graph was converted from.
KERAS_SHA_KEY = "celltally.keras_sha256"
_KERAS_FILE = "model.keras"  # core.run.MODEL_FILE; core.run imports this module


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class _Graph:
    """Nodes and weights of the ONNX graph being written, in NCHW between the two transposes."""

    def __init__(self):
        self.nodes, self.weights = [], []

    def weight(self, name: str, array) -> str:
        from onnx import numpy_helper

        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def node(self, op: str, inputs, output: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output


def _same_pads(kernel, padding: str) -> list[int]:
    """ONNX pads (begins then ends) for a stride-1 Keras conv: 'same' puts the odd pixel last."""
    if padding == "valid":
        return [0] * (2 * len(kernel))
    begins = [(k - 1) // 2 for k in kernel]
    return begins + [k - 1 - b for k, b in zip(kernel, begins)]


def _conv(g: _Graph, layer, cfg: dict, x: str, name: str) -> str:
    if tuple(cfg["strides"]) != (1, 1) or tuple(cfg["dilation_rate"]) != (1, 1) \
            or cfg.get("groups", 1) != 1:
        raise ValueError(f"layer {name}: only stride-1, undilated, ungrouped Conv2D converts")
    kernel, *bias = layer.get_weights()
    inputs = [x, g.weight(f"{name}.W", kernel.transpose(3, 2, 0, 1))]
    if bias:
        inputs.append(g.weight(f"{name}.B", bias[0]))
    y = g.node("Conv", inputs, f"{name}:0", kernel_shape=list(cfg["kernel_size"]),
               pads=_same_pads(cfg["kernel_size"], cfg["padding"]))
    return _activation(g, cfg["activation"], y, f"{name}:act")


def _conv_transpose(g: _Graph, layer, cfg: dict, x: str, name: str) -> str:
    kernel_size, strides = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
    # With kernel == stride the output is exactly stride x input under 'same' and 'valid' alike.
    if kernel_size != strides or tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) \
            or cfg.get("output_padding") not in (None, [0, 0], (0, 0)):
        raise ValueError(f"layer {name}: only Conv2DTranspose with kernel_size == strides converts")
    kernel, *bias = layer.get_weights()  # Keras (kh, kw, out, in); ONNX (in, out, kh, kw)
    inputs = [x, g.weight(f"{name}.W", kernel.transpose(3, 2, 0, 1))]
    if bias:
        inputs.append(g.weight(f"{name}.B", bias[0]))
    y = g.node("ConvTranspose", inputs, f"{name}:0", kernel_shape=list(kernel_size),
               strides=list(strides))
    return _activation(g, cfg["activation"], y, f"{name}:act")


def _batch_norm(g: _Graph, layer, cfg: dict, x: str, name: str) -> str:
    if cfg["axis"] not in (-1, 3, [-1], [3]):
        raise ValueError(f"layer {name}: only BatchNormalization over the channel axis converts")
    weights = list(layer.get_weights())
    channels = weights[-1].shape[0]
    gamma = weights.pop(0) if cfg["scale"] else np.ones(channels, np.float32)
    beta = weights.pop(0) if cfg["center"] else np.zeros(channels, np.float32)
    mean, variance = weights
    inputs = [x] + [g.weight(f"{name}.{k}", v) for k, v in
                    (("scale", gamma), ("bias", beta), ("mean", mean), ("var", variance))]
    return g.node("BatchNormalization", inputs, f"{name}:0", epsilon=float(cfg["epsilon"]))


def _activation(g: _Graph, activation, x: str, name: str) -> str:
    if isinstance(activation, dict):
        activation = activation.get("config", {}).get("name") or activation.get("class_name")
    activation = str(activation).lower()
    if activation == "linear":
        return x
    ops = {"elu": ("Elu", {"alpha": 1.0}), "sigmoid": ("Sigmoid", {}), "relu": ("Relu", {})}
    if activation not in ops:
        raise ValueError(f"layer {name.split(':')[0]}: activation {activation!r} does not "
                         "convert to ONNX")
    op, attrs = ops[activation]
    return g.node(op, [x], name, **attrs)


def _max_pool(g: _Graph, cfg: dict, x: str, name: str) -> str:
    pool = list(cfg["pool_size"])
    strides = list(cfg.get("strides") or pool)
    if cfg["padding"] != "valid" or pool != strides:
        raise ValueError(f"layer {name}: only MaxPooling2D with padding='valid' and "
                         "strides == pool_size converts")
    return g.node("MaxPool", [x], f"{name}:0", kernel_shape=pool, strides=strides)


def _inbound(layer_config: dict) -> list[str]:
    """Names of the layers feeding one layer (its first and only call)."""
    nodes = layer_config["inbound_nodes"]
    if len(nodes) != 1:
        raise ValueError(f"layer {layer_config['name']} is called {len(nodes)} times; "
                         "only layers called once convert")
    args = nodes[0]["args"]
    flat = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    return [t["config"]["keras_history"][0] for t in flat]


def _tensor_refs(refs) -> list:
    """Keras writes one model input as ``[name, 0, 0]`` and several as a list of those."""
    return [refs] if refs and isinstance(refs[0], str) else list(refs)


def _layer_node(g: _Graph, layer, spec: dict, inputs: list[str]) -> str:
    """Emit the ONNX node(s) of one Keras layer; return the name of its output."""
    kind, cfg, name = spec["class_name"], spec["config"], spec["name"]
    if kind == "Conv2D":
        return _conv(g, layer, cfg, inputs[0], name)
    if kind == "Conv2DTranspose":
        return _conv_transpose(g, layer, cfg, inputs[0], name)
    if kind == "BatchNormalization":
        return _batch_norm(g, layer, cfg, inputs[0], name)
    if kind == "Activation":
        return _activation(g, cfg["activation"], inputs[0], f"{name}:0")
    if kind == "MaxPooling2D":
        return _max_pool(g, cfg, inputs[0], name)
    if kind == "Concatenate":
        if cfg["axis"] not in (-1, 3):
            raise ValueError(f"layer {name}: only Concatenate over channels converts")
        return g.node("Concat", inputs, f"{name}:0", axis=1)
    if kind == "Add":
        return g.node("Sum" if len(inputs) > 2 else "Add", inputs, f"{name}:0")
    raise ValueError(f"layer {name}: {kind} layers do not convert to ONNX; the converter knows "
                     "the layers of core.model.build_cresunet")


def keras_to_onnx(model):
    """Convert a c-ResUnet Keras model to an ONNX model (float32, dynamic batch and size).

    Parameters
    ----------
    model : keras.Model
        A functional model with one channels-last input and one output, built from Conv2D,
        Conv2DTranspose (kernel == stride), BatchNormalization, Activation (elu, sigmoid, relu),
        MaxPooling2D, Concatenate and Add layers, as :func:`core.model.build_cresunet` is.

    Returns
    -------
    onnx.ModelProto
        Input ``rgb`` (batch, y, x, 3) and output ``heatmap`` (batch, y, x, 1), both float32;
        see the module docstring.

    Raises
    ------
    ValueError
        A layer or option the converter does not know (the message names the layer).

    Examples
    --------
    >>> from core.model import build_cresunet
    >>> proto = keras_to_onnx(build_cresunet(2))
    >>> [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
    (['rgb'], ['heatmap'])
    """
    import onnx
    from onnx import TensorProto, helper

    config = model.get_config()
    specs = config["layers"]
    ins, outs = (_tensor_refs(config[k]) for k in ("input_layers", "output_layers"))
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError("only a model with one input and one output converts to ONNX")
    g = _Graph()
    outputs: dict[str, str] = {}
    for spec in specs:
        if spec["class_name"] == "InputLayer":
            outputs[spec["name"]] = g.node("Transpose", [INPUT_NAME], f"{spec['name']}:0",
                                           perm=[0, 3, 1, 2])
            continue
        inputs = [outputs[n] for n in _inbound(spec)]  # config order is topological
        outputs[spec["name"]] = _layer_node(g, model.get_layer(spec["name"]), spec, inputs)
    last = outputs[outs[0][0]]
    g.node("Transpose", [last], OUTPUT_NAME, perm=[0, 2, 3, 1])
    graph = helper.make_graph(
        g.nodes, model.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", "y", "x", 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", "y", "x", 1])],
        initializer=g.weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="celltally", doc_string=(
                                  "c-ResUnet cell probability: rgb float32 (batch, y, x, 3) in "
                                  "[0, 1], y and x multiples of 8 -> heatmap float32 "
                                  "(batch, y, x, 1)"))
    proto.ir_version = _IR_VERSION
    onnx.checker.check_model(proto)
    return proto


def _write_atomic(data: bytes, target: Path) -> None:
    """Write through a temp file in the same directory, renamed into place."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(name, default_file_mode())
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def save_onnx(model, target, *, keras_sha256: str | None = None) -> Path:
    """Convert ``model`` and write it to ``target`` atomically; return the path.

    ``keras_sha256`` (the SHA-256 of the ``model.keras`` it mirrors) is stored in the file's
    metadata, so :func:`find_onnx` can tell a stale file from a current one.
    """
    from onnx import helper

    proto = keras_to_onnx(model)
    if keras_sha256:
        helper.set_model_props(proto, {KERAS_SHA_KEY: keras_sha256})
    target = Path(target)
    _write_atomic(proto.SerializeToString(), target)
    log.info("wrote %s", target)
    return target


def _recorded_sha(path: Path) -> str | None:
    """The model.keras SHA-256 an ONNX file says it came from (None when it says nothing)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in proto.metadata_props if p.key == KERAS_SHA_KEY), None)


def find_onnx(run_dir, *, cache_dir=None) -> Path | None:
    """The run's current ONNX file, or None; never converts (count-only installs, workers).

    Looks at ``<run_dir>/model.onnx``, then ``<cache_dir>/<sha256 of model.keras>.onnx``. A file
    whose recorded ``model.keras`` SHA-256 differs from the run's (a model replaced since) is
    ignored. A run directory holding only ``model.onnx`` (no Keras file) uses it as it is.

    Examples
    --------
    >>> find_onnx("/nonexistent") is None
    True
    """
    run_dir = Path(run_dir)
    keras_file, onnx_file = run_dir / _KERAS_FILE, run_dir / ONNX_FILE
    if not keras_file.is_file():
        return onnx_file if onnx_file.is_file() else None
    sha = _sha256(keras_file)
    candidates = [onnx_file] + ([Path(cache_dir) / f"{sha}.onnx"] if cache_dir else [])
    for path in candidates:
        if not path.is_file():
            continue
        recorded = _recorded_sha(path)
        if recorded in (None, sha):
            return path
        log.warning("%s was converted from another model.keras; ignoring it", path)
    return None


def missing_onnx_message(run_dir) -> str:
    """The sentence a count-only install or a Dask worker gives for a run without ONNX."""
    return (f"{run_dir} has no model.onnx; run `python -m core export {run_dir}` "
            "on a full install")


def ensure_onnx(run_dir, *, cache_dir=None) -> Path:
    """The run's ONNX file, converting ``model.keras`` once when there is none (needs Keras).

    Parameters
    ----------
    run_dir : path
        A run directory (``core.run``).
    cache_dir : path, optional
        Where to write the file when the run directory is read-only (the app passes
        ``<data dir>/cache/onnx``); named by the SHA-256 of ``model.keras``.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        No ``model.keras`` to convert, a read-only run directory without ``cache_dir``, or a
        network the converter does not know.
    """
    run_dir = Path(run_dir).resolve()
    found = find_onnx(run_dir, cache_dir=cache_dir)
    if found is not None:
        return found
    keras_file = run_dir / _KERAS_FILE
    if not keras_file.is_file():
        raise ValueError(f"run directory {run_dir} has neither {ONNX_FILE} nor {_KERAS_FILE}; "
                         "copy the whole run directory")
    import keras

    model = keras.saving.load_model(keras_file, compile=False)
    sha = _sha256(keras_file)
    if os.access(run_dir, os.W_OK):
        return save_onnx(model, run_dir / ONNX_FILE, keras_sha256=sha)
    if cache_dir is None:
        raise ValueError(f"run directory {run_dir} is read-only and has no {ONNX_FILE}; "
                         "copy it somewhere writable or pass a cache directory")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return save_onnx(model, Path(cache_dir) / f"{sha}.onnx", keras_sha256=sha)


# --- BioImage Model Zoo package ----------------------------------------------------------------

#: The c-ResUnet paper, cited by every package.
PAPER_CITATION = {
    "text": "Morelli R, Clissa L, et al. Automatic cell counting in fluorescent "
            "microscopy using deep learning. Sci Rep 11, 22920 (2021)",
    "doi": "10.1038/s41598-021-01929-5"}
#: Fluorescent Neuronal Cells v2 is CC BY-SA 4.0: a model trained on it carries that licence.
FNC_LICENSE = "CC-BY-SA-4.0"
DEFAULT_LICENSE = "CC-BY-4.0"
PACKAGE_FORMAT = "0.5.4"
TEST_SIDE = 256  # the package's test tensors: a 256x256 synthetic crop


@dataclass(frozen=True)
class PackageInfo:
    """What a package says beyond the run directory itself.

    Attributes
    ----------
    training_data : str
        One paragraph on what trained the run (the README's "Training data" section). Empty:
        the counts of the run's manifest.
    fnc : bool
        Fluorescent Neuronal Cells data trained it: the licence becomes CC BY-SA 4.0 and the
        README credits the data set.
    authors : tuple of str
        The package's authors (bioimage.io lists them).
    """

    training_data: str = ""
    fnc: bool = False
    authors: tuple = ("CellTally",)


def _manifest_summary(manifest: dict) -> str:
    """'12 training, 4 validation and 8 test images (...)' from a run's manifest."""
    def count(role):
        if isinstance(manifest.get(role), list):
            return len(manifest[role])
        return sum(len(v.get(role, [])) for v in manifest.values() if isinstance(v, dict))

    parts = [f"{count(r)} {w} images" for r, w in
             (("train", "training"), ("validation", "validation"), ("test", "test"))]
    sources = [v["source"] for v in manifest.values() if isinstance(v, dict) and "source" in v]
    text = f"{parts[0]}, {parts[1]} and {parts[2]}"
    return text + (f", drawn by `{'`, `'.join(sources)}`." if sources else ".")


def _score_lines(metrics: dict, threshold: float) -> list[str]:
    names = [("f1", "F1"), ("precision", "precision"), ("recall", "recall"),
             ("mae", "count MAE"), ("medae", "count MedAE"), ("bias", "count bias"),
             ("mean_iou", "mean IoU"), ("n_images", "test images")]
    lines = [f"| {label} | {metrics[key]:.4g} |" for key, label in names
             if isinstance(metrics.get(key), (int, float))]
    return ["| score | value |", "| --- | --- |", *lines, f"| threshold | {threshold:g} |"]


def _readme(run, info: PackageInfo, licence: str) -> str:
    """The package's README.md: what the model does, its scores, data, licence and use."""
    trained_on = info.training_data or _manifest_summary(run.manifest)
    data = [f"Trained on {trained_on}"]
    if info.fnc:
        data.append("The training data include the Fluorescent Neuronal Cells data set "
                    "(Clissa et al., University of Bologna), licensed CC BY-SA 4.0; this "
                    "model is shared under the same licence.")
    return "\n".join([
        f"# c-ResUnet cell counter: {run.name}", "",
        "Counts stained neurons in RGB fluorescence microscopy images. The network gives a "
        "per-pixel cell probability; thresholding it, filling holes, removing small objects "
        "and a distance-transform watershed give the counted cells (Morelli, Clissa et al., "
        "Sci Rep 2021). Exported by CellTally.", "",
        "## Input and output", "",
        "- `rgb`: (batch, y, x, 3) RGB, 8-bit values; the package's preprocessing divides by "
        "255, so the ONNX graph sees float32 in [0, 1]. y and x: multiples of 8, 64 or more.",
        "- `heatmap`: (batch, y, x, 1) float32 cell probability.",
        f"- The run counts cells where the probability exceeds {run.threshold:g}, with the "
        "post-processing in `config.json`'s `postprocess` (attached `model.keras` has the "
        "same weights).", "",
        "## Validation", "",
        "Scores on the run's held-out test images, objects matched within one cell diameter:",
        "", *_score_lines(run.metrics, run.threshold), "",
        "## Training data", "", *data, "",
        "## Licence and citation", "",
        f"Licence: {licence}. Cite: {PAPER_CITATION['text']}, doi:{PAPER_CITATION['doi']}.", ""])


def _test_tensors(network) -> tuple[np.ndarray, np.ndarray]:
    """A 256x256 synthetic crop (uint8, batch first) and the network's heatmap of it."""
    from core.predict import predict_heatmap
    from core.synthetic import make_image

    rgb, _ = make_image(np.random.default_rng(0), shape=(TEST_SIDE, TEST_SIDE))
    heat = predict_heatmap(network, rgb)
    return rgb[None], heat[None, ..., None]


def _cover(rgb: np.ndarray, heat: np.ndarray) -> bytes:
    """Cover image: the test crop beside its heatmap overlay (2:1, as bioimage.io asks)."""
    from core.io import encode_png
    from core.render import heatmap_overlay

    return encode_png(np.concatenate([rgb, heatmap_overlay(rgb, heat)], axis=1))


def _rdf(run, info: PackageInfo, licence: str, files: dict) -> dict:
    """The rdf.yaml content (model description format 0.5)."""
    space = {"min": 64, "step": 8}
    return {
        "type": "model", "format_version": PACKAGE_FORMAT, "name": f"c-ResUnet {run.name}",
        "description": "Cell probability heatmap of stained neurons in RGB fluorescence "
                       "images (c-ResUnet); exported by CellTally.",
        "authors": [{"name": a} for a in info.authors], "license": licence,
        "cite": [PAPER_CITATION], "documentation": "README.md", "covers": ["cover.png"],
        "tags": ["cell-counting", "fluorescence-light-microscopy", "neurons", "unet",
                 "semantic-segmentation", "2d", "onnx"],
        "attachments": [{"source": "model.keras", "sha256": files["model.keras"]},
                        {"source": "config.json", "sha256": files["config.json"]}],
        "inputs": [{
            "id": INPUT_NAME, "description": "RGB image, 8-bit values",
            "axes": [{"type": "batch"}, {"type": "space", "id": "y", "size": space},
                     {"type": "space", "id": "x", "size": space},
                     {"type": "channel", "channel_names": ["r", "g", "b"]}],
            "test_tensor": {"source": "test_input.npy", "sha256": files["test_input.npy"]},
            "sample_tensor": {"source": "sample_input.png", "sha256": files["sample_input.png"]},
            "data": {"type": "uint8"},
            # The closing ensure_dtype keeps the spec from casting the result back to uint8.
            "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                              {"id": "scale_linear", "kwargs": {"gain": 1 / 255.0,
                                                                "offset": 0.0}},
                              {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]}],
        "outputs": [{
            "id": OUTPUT_NAME, "description": "cell probability",
            "axes": [{"type": "batch"},
                     {"type": "space", "id": "y", "size": {"tensor_id": INPUT_NAME,
                                                          "axis_id": "y"}},
                     {"type": "space", "id": "x", "size": {"tensor_id": INPUT_NAME,
                                                          "axis_id": "x"}},
                     {"type": "channel", "channel_names": ["cell"]}],
            "test_tensor": {"source": "test_output.npy", "sha256": files["test_output.npy"]},
            "sample_tensor": {"source": "sample_output.tif",
                              "sha256": files["sample_output.tif"]},
            "data": {"type": "float32", "range": [0.0, 1.0]}}],
        "weights": {"onnx": {"source": ONNX_FILE, "sha256": files[ONNX_FILE],
                             "opset_version": OPSET, "authors": [{"name": a}
                                                                 for a in info.authors]}},
        "config": {"celltally": {"threshold": run.threshold,
                                 "postprocess": run.postprocess.to_dict()}},
    }


def _tiff(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def export_package(run_dir, out, *, info: PackageInfo = PackageInfo(), cache_dir=None) -> Path:
    """Write a run as a BioImage Model Zoo package (a zip with ``rdf.yaml``); return its path.

    The package holds ``model.onnx`` (the only weights entry, so ``bioimageio.core``'s
    ``test_model`` tests just it), ``model.keras`` and ``config.json`` as attachments, test
    tensors of a 256x256 synthetic crop, a cover image, and a README with the run's test
    scores and a summary of its training data. Its licence is CC BY 4.0, or CC BY-SA 4.0 when
    Fluorescent Neuronal Cells data trained it (``info.fnc``); it cites the c-ResUnet paper.

    Parameters
    ----------
    run_dir : path
        The run directory; ``model.onnx`` is made first when it is missing (needs Keras).
    out : path
        The zip file to write (replaced atomically).
    info : PackageInfo
        Training-data summary, FNC flag and authors.
    cache_dir : path, optional
        See :func:`ensure_onnx`.

    Returns
    -------
    Path
    """
    import yaml

    from core.io import encode_png
    from core.predict import load_network
    from core.run import load_run

    run = load_run(run_dir, with_model=False)
    onnx_file = ensure_onnx(run.path, cache_dir=cache_dir)
    rgb, heat = _test_tensors(load_network(run.path, cache_dir=cache_dir))
    licence = FNC_LICENSE if info.fnc else DEFAULT_LICENSE
    payloads = {ONNX_FILE: onnx_file.read_bytes(),
                "model.keras": (run.path / _KERAS_FILE).read_bytes(),
                "config.json": (run.path / "config.json").read_bytes(),
                "test_input.npy": _npy(rgb), "test_output.npy": _npy(heat),
                "sample_input.png": encode_png(rgb[0]), "sample_output.tif": _tiff(heat[0]),
                "cover.png": _cover(rgb[0], heat[0, ..., 0]),
                "README.md": _readme(run, info, licence).encode()}
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in payloads.items()}
    payloads["rdf.yaml"] = yaml.safe_dump(_rdf(run, info, licence, sums),
                                          sort_keys=False).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in payloads.items():
            archive.writestr(name, data)
    out = Path(out).resolve()
    _write_atomic(buffer.getvalue(), out)
    log.info("wrote the package %s", out)
    return out
