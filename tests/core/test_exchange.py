"""model.onnx: the converter reproduces Keras, runs convert once, packages hold what they say."""
import hashlib
import io
import json
import os
import shutil
import zipfile

import numpy as np
import onnx
import pytest
import yaml

from core import exchange
from core.cli import main
from core.model import build_cresunet
from core.postprocess import PostprocessParams
from core.predict import OnnxNetwork, load_network, predict_heatmap
from core.run import save_run
from core.synthetic import make_image


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _randomised(base: int, seed: int):
    """A c-ResUnet whose batch norms hold trained-looking statistics (not 0/1), so every
    layer's conversion matters, scaled so the heatmap spreads over (0, 1)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_cresunet(base)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    # Untrained logits run to hundreds; scale the head so they spread over about -3..3.
    head = model.get_layer("head")
    logits = keras.Model(model.input, head.output).predict_on_batch(
        rng.random((1, 64, 64, 3), dtype=np.float32))
    kernel, bias = head.get_weights()
    scale = 1.5 / float(np.std(logits))
    head.set_weights([kernel * scale, (bias - float(np.mean(logits))) * scale])
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    model = _randomised(2, seed=11)
    path = exchange.save_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx")
    return model, OnnxNetwork(path)


@pytest.mark.parametrize("shape", [(64, 64), (64, 200), (1200, 1600), (2000, 2000)])
def test_onnx_reproduces_predict_heatmap(pair, shape):
    model, network = pair
    rgb = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    want = predict_heatmap(model, rgb)
    got = predict_heatmap(network, rgb)
    assert got.shape == shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4
    # Not a saturated map, where any two networks agree: a real spread of probabilities.
    assert np.mean((want > 0.05) & (want < 0.95)) > 0.2


def test_graph_has_one_dynamic_input_and_output(pair):
    model, network = pair
    proto = onnx.load(str(network.path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("rgb", ["batch", "y", "x", 3])
    assert (out.name, dims(out)) == ("heatmap", ["batch", "y", "x", 1])
    assert {op.domain or "" for op in proto.opset_import} == {""}
    assert proto.opset_import[0].version == exchange.OPSET
    # Batch of two, of another size: each item as the Keras model gives it alone.
    x = np.random.default_rng(2).random((2, 72, 96, 3), dtype=np.float32)
    np.testing.assert_allclose(network.predict_on_batch(x), model.predict_on_batch(x), atol=1e-4)


def test_tiles_above_four_megapixels_stay_exact_on_onnx(pair):
    _, network = pair
    rgb = np.random.default_rng(4).integers(0, 256, (2048, 2064, 3), dtype=np.uint8)
    tiled = predict_heatmap(network, rgb)  # 4.2 MP: tiled by default
    whole = network.predict_on_batch(rgb[None].astype(np.float32) / np.float32(255))[0, ..., 0]
    assert np.abs(tiled - whole).max() <= 1e-5


def test_unknown_layers_are_refused_by_name():
    import keras

    x = keras.Input((None, None, 3))
    model = keras.Model(x, keras.layers.Dense(1, name="not_a_conv")(x))
    with pytest.raises(ValueError, match="not_a_conv: Dense"):
        exchange.keras_to_onnx(model)


@pytest.fixture
def tiny_run(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    return save_run(tmp_path / "tiny", model=build_cresunet(2), config={"base_filters": 2},
                    postprocess=PostprocessParams.paper(cell_diameter=20),
                    thresholds={"best": 0.5, "knee": None, "chosen": 0.5},
                    metrics={"f1": 0.8125, "mae": 1.5, "n_images": 4},
                    manifest={"train": [[1, 1], [2, 2]], "validation": [[3, 3]],
                              "test": [[4, 4]]})


def test_save_run_writes_onnx_stamped_with_the_keras_hash(tiny_run):
    onnx_file = tiny_run / exchange.ONNX_FILE
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert props[exchange.KERAS_SHA_KEY] == _sha(tiny_run / "model.keras")
    assert exchange.find_onnx(tiny_run) == onnx_file


def test_an_older_run_is_converted_once_and_a_stale_file_is_ignored(tiny_run, tmp_path):
    onnx_file = tiny_run / exchange.ONNX_FILE
    onnx_file.unlink()
    assert exchange.find_onnx(tiny_run) is None
    network = load_network(tiny_run)
    assert isinstance(network, OnnxNetwork) and onnx_file.is_file()
    first = onnx_file.stat().st_mtime_ns
    load_network(tiny_run)
    assert onnx_file.stat().st_mtime_ns == first                 # converted once
    # A model.keras replaced since: the old model.onnx no longer describes it.
    other = save_run(tmp_path / "other", model=build_cresunet(2), config={},
                     postprocess=PostprocessParams.paper(),
                     thresholds={"best": 0.5, "knee": None, "chosen": 0.5}, metrics={},
                     manifest={})
    shutil.copy(other / "model.keras", tiny_run / "model.keras")
    assert exchange.find_onnx(tiny_run) is None
    assert exchange.ensure_onnx(tiny_run) == onnx_file
    np.testing.assert_array_equal(onnx_file.read_bytes(), (other / "model.onnx").read_bytes())


def test_a_read_only_run_converts_into_the_cache(tiny_run, tmp_path, monkeypatch):
    (tiny_run / exchange.ONNX_FILE).unlink()
    # Root may write anywhere, so the directory is made unwritable the way the check sees it.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tiny_run)
                        else real_access(p, mode))
    cache = tmp_path / "cache"
    made = exchange.ensure_onnx(tiny_run, cache_dir=cache)
    assert made == cache / f"{_sha(tiny_run / 'model.keras')}.onnx"
    assert not (tiny_run / exchange.ONNX_FILE).exists()
    assert exchange.find_onnx(tiny_run, cache_dir=cache) == made
    made.unlink()
    with pytest.raises(ValueError, match="read-only"):
        exchange.ensure_onnx(tiny_run)


def _package(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_package_declares_onnx_only_and_holds_what_it_names(tiny_run, tmp_path):
    out = tmp_path / "pkg.zip"
    assert main(["export", str(tiny_run), "--out", str(out), "--fnc"]) == 0
    files = _package(out)
    rdf = yaml.safe_load(files["rdf.yaml"])
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert list(rdf["weights"]) == ["onnx"] and rdf["weights"]["onnx"]["source"] == "model.onnx"
    assert [a["source"] for a in rdf["attachments"]] == ["model.keras", "config.json"]
    for entry in [rdf["weights"]["onnx"], *rdf["attachments"], rdf["inputs"][0]["test_tensor"],
                  rdf["outputs"][0]["test_tensor"]]:
        assert hashlib.sha256(files[entry["source"]]).hexdigest() == entry["sha256"]
    assert files["model.keras"] == (tiny_run / "model.keras").read_bytes()
    assert rdf["license"] == "CC-BY-SA-4.0" and "s41598" in rdf["cite"][0]["doi"]
    x = np.load(io.BytesIO(files["test_input.npy"]))
    y = np.load(io.BytesIO(files["test_output.npy"]))
    assert x.shape == (1, 256, 256, 3) and x.dtype == np.uint8 and y.shape == (1, 256, 256, 1)
    rgb, _ = make_image(np.random.default_rng(0), shape=(256, 256))
    np.testing.assert_array_equal(x[0], rgb)
    from core.run import load_run

    keras_heat = predict_heatmap(load_run(tiny_run).model, rgb)
    assert np.abs(y[0, ..., 0] - keras_heat).max() <= 1e-4
    readme = files["README.md"].decode()
    assert "| F1 | 0.8125 |" in readme and "2 training images, 1 validation" in readme
    assert "CC BY-SA 4.0" in readme and "## Validation" in readme


def test_package_without_fnc_is_cc_by(tiny_run, tmp_path):
    out = tmp_path / "pkg.zip"
    exchange.export_package(tiny_run, out)
    rdf = yaml.safe_load(_package(out)["rdf.yaml"])
    assert rdf["license"] == "CC-BY-4.0"
    assert json.loads(_package(out)["config.json"])["base_filters"] == 2
