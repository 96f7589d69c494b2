"""``python -m core count``: rows per file, errors in their rows, exit statuses, auto and model."""
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from core.cli import COLUMNS, expand_inputs, main
from core.io import write_image
from core.synthetic import make_image

ROOT = Path(__file__).resolve().parents[2]
CELL = (200, 160, 14)           # FNC-like yellow-orange stain
# Four lone cells and an overlapping pair the watershed must split: 6 cells by construction.
CENTRES = [(40, 40), (40, 150), (150, 40), (100, 200), (150, 130), (150, 156)]


def _disks(rng) -> np.ndarray:
    rgb = rng.integers(0, 12, (200, 240, 3)).astype(np.uint8)
    rgb[..., 2] = 0             # a dark, reddish textured background
    for centre in CENTRES:
        rgb[disk(centre, 14, shape=rgb.shape[:2])] = CELL
    return rgb


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        return list(reader)


@pytest.fixture
def folder(tmp_path, rng):
    """Two small synthetic images and one corrupt file."""
    for i in range(2):
        rgb, _ = make_image(rng, shape=(160, 200))
        write_image(tmp_path / f"img{i}.png", rgb)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return tmp_path


def test_subprocess_counts_and_reports_the_corrupt_file(folder, tmp_path):
    out = tmp_path / "counts.csv"
    files = [str(folder / n) for n in ("img0.png", "broken.png", "img1.png")]
    done = subprocess.run([sys.executable, "-m", "core", "count", *files, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    assert [r["file"] for r in rows] == files              # one row each, in the given order
    good, bad = [rows[0], rows[2]], rows[1]
    assert all(r["count"].isdigit() and r["error"] == "" for r in good)
    assert all(r["method"] == "auto:li" and r["threshold"] == "" for r in rows)
    assert bad["count"] == "" and "broken.png" in bad["error"] and "truncated" in bad["error"]
    assert "counted 2 of 3 images" in done.stdout


def test_auto_count_equals_the_drawn_disks(tmp_path, rng):
    write_image(tmp_path / "disks.png", _disks(rng))
    out = tmp_path / "counts.csv"
    assert main(["count", str(tmp_path), "--out", str(out), "--cell-diameter", "28",
                 "--method", "otsu", "-q"]) == 0
    (row,) = _rows(out)
    assert row["count"] == str(len(CENTRES)) and row["method"] == "auto:otsu"


def test_all_unreadable_is_a_failure(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.tif").write_bytes(b"hello")
    out = tmp_path / "counts.csv"
    assert main(["count", str(tmp_path / "a.png"), str(tmp_path / "b.tif"),
                 str(tmp_path / "missing.png"), "--out", str(out), "-q"]) == 1
    rows = _rows(out)
    assert len(rows) == 3 and all(r["error"] and r["count"] == "" for r in rows)
    assert "not found" in rows[2]["error"]


def test_directories_expand_to_their_images_sorted(tmp_path):
    for name in ("b.PNG", "a.tif", "c.jpeg", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.tif", "b.PNG", "c.jpeg"]
    empty = tmp_path / "sub"
    assert main(["count", str(empty), "--out", str(tmp_path / "x.csv"), "-q"]) == 1


@pytest.mark.parametrize("argv", [
    ["count", "x.png"],                                             # no --out
    ["count", "--out", "c.csv"],                                    # no images
    ["count", "x.png", "--out", "c.csv", "--method", "bogus"],
    ["count", "x.png", "--out", "c.csv", "--model", "run", "--method", "li"],
    ["count", "x.png", "--out", "c.csv", "--cell-diameter", "0"],
    ["count", "x.png", "--out", "no/such/folder/c.csv"],
    ["count", "x.png", "--out", "c.csv", "--model", "no-such-run"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory with an untrained base_filters=2 network and a hand-set threshold."""
    import keras

    from core.model import build_cresunet
    from core.postprocess import PostprocessParams
    from core.run import save_run

    keras.utils.set_random_seed(0)
    return save_run(tmp_path_factory.mktemp("runs") / "tiny-run", model=build_cresunet(2),
                    config={"base_filters": 2}, postprocess=PostprocessParams.fnc_v2(24),
                    thresholds={"best": 0.5, "knee": 0.7, "chosen": 0.625},
                    metrics={}, manifest={})


def test_model_count_names_the_run_and_its_threshold(tiny_run, folder, tmp_path):
    out = tmp_path / "model.csv"
    assert main(["count", str(folder), "--model", str(tiny_run), "--out", str(out), "-q"]) == 0
    rows = _rows(out)
    assert [Path(r["file"]).name for r in rows] == ["broken.png", "img0.png", "img1.png"]
    assert all(r["method"] == "model:tiny-run" and r["threshold"] == "0.625" for r in rows)
    assert rows[0]["error"] and all(r["count"].isdigit() for r in rows[1:])
