"""The command line, and a consistent backup of a live SQLite database."""
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from db import cli
from db.engine import make_engine
from db.models import Project, User
from db.settings import Settings
from db.users import authenticate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local(tmp_path):
    return Settings(data_dir=tmp_path, db_url=f"sqlite:///{tmp_path / 'ct.db'}")


def test_upgrade_project_and_users(local, monkeypatch, capsys):
    assert cli.main(["upgrade"], local) == 0
    assert cli.main(["project", "create", "Yellow", "--stain", "yellow", "--pixel-size", "0.5"],
                    local) == 0
    assert cli.main(["project", "create", "Yellow", "--stain", "yellow"], local) == 2
    monkeypatch.setenv("CELLTALLY_PASSWORD", "first password")
    assert cli.main(["user", "add", "root", "--role", "admin"], local) == 0
    monkeypatch.setenv("CELLTALLY_PASSWORD", "second password")
    assert cli.main(["user", "passwd", "root"], local) == 0
    engine = make_engine(local)
    with Session(engine) as s, s.begin():
        assert s.query(Project).one().pixel_size_um == 0.5
        assert authenticate(s, "root", "second password").role == "admin"
    assert cli.main(["user", "disable", "root"], local) == 0
    assert cli.main(["user", "disable", "nobody"], local) == 2
    with Session(engine) as s:
        assert s.query(User).one().disabled
    assert "created" in capsys.readouterr().out


def test_import_and_export_arguments_parse():
    args = cli.build_parser().parse_args(
        ["import", "/data/fnc", "--project", "Y", "--format", "fnc", "--masks", "/m", "--approved"])
    assert (args.format, args.approved, args.masks, args.no_prelabel) == ("fnc", True, Path("/m"), False)
    args = cli.build_parser().parse_args(["export", "counts", "--project", "Y", "--out", "c.csv"])
    assert (args.kind, args.out, args.split) == ("counts", Path("c.csv"), None)


def test_backup_of_a_live_sqlite_database(local, tmp_path):
    import gzip
    import json
    import tarfile

    engine = make_engine(local)
    assert cli.main(["project", "create", "A", "--stain", "red"], local) == 0
    # A second connection holds an open write transaction while the backup runs.
    writer = sqlite3.connect(tmp_path / "ct.db", timeout=30)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("BEGIN")
    writer.execute("INSERT INTO projects (name, stain, created_at) VALUES ('B', 'green', '2024-01-01')")
    dest = tmp_path / "backup" / "copy.tar"
    assert cli.main(["backup", str(dest)], local) == 0
    writer.commit()
    writer.close()
    with tarfile.open(dest) as tar:
        rows = [json.loads(line) for line in gzip.open(tar.extractfile("dump/projects.jsonl.gz"))]
    assert [r["name"] for r in rows] == ["A"]
    engine.dispose()
    bad = Settings(data_dir=tmp_path, db_url="postgresql+psycopg://u@127.0.0.1:9/db")
    assert cli.main(["backup", str(tmp_path / "other.tar")], bad) == 2


def test_python_dash_m_db_runs(tmp_path):
    env = {"CELLTALLY_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "CELLTALLY_DEMO": "0"}
    out = subprocess.run([sys.executable, "-m", "db", "upgrade"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "revision" in out.stdout and (tmp_path / "celltally.db").exists()


def test_import_a_folder_under_a_user_name(local, monkeypatch, capsys):
    from core.io import write_image
    from db.models import ImportBatch, Image, MaskVersion

    folder = local.data_dir / "incoming"
    folder.mkdir()
    for i in range(2):
        rgb = np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8)
        write_image(folder / f"cells_{i}.png", rgb)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    monkeypatch.setenv("CELLTALLY_PASSWORD", "a long enough password")
    assert cli.main(["project", "create", "Yellow", "--stain", "yellow"], local) == 0
    assert cli.main(["user", "add", "ann", "--role", "operator"], local) == 0
    assert cli.main(["import", str(folder), "--project", "Yellow", "--user", "nobody"], local) == 2
    assert cli.main(["import", str(folder), "--project", "Yellow", "--user", "ann"], local) == 0
    assert "Imported 2 images; skipped 1 file (1 corrupt)." in capsys.readouterr().out
    engine = make_engine(local)
    with Session(engine) as s:
        ann = s.query(User).filter_by(name="ann").one()
        [batch] = s.query(ImportBatch).all()       # the refused run left nothing behind
        assert batch.user_id == ann.id
        assert s.query(Image).count() == 2 and s.query(MaskVersion).count() == 2
    engine.dispose()


# ------------------------------------------------------------------ import, split, export on both databases

def _cells_folder(root: Path, n: int = 3) -> Path:
    """``root/images`` with n small pictures, and ``root/masks`` with a two-cell mask for each."""
    from core.io import write_image, write_mask

    for k in range(n):
        rgb = np.random.default_rng(k).integers(0, 30, (40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), bool)
        mask[5:12, 6:14] = mask[22:31, 28:37] = True
        rgb[mask] = (220, 180, 20)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        write_image(root / "images" / f"cells_{k}.png", rgb)
        write_mask(root / "masks" / f"cells_{k}.png", mask)
    return root


@pytest.fixture
def imported(settings, capsys):
    """Project Y with three images and their masks, imported through the command line."""
    folder = _cells_folder(settings.data_dir / "incoming")
    assert cli.main(["project", "create", "Y", "--stain", "yellow"], settings) == 0
    assert cli.main(["import", str(folder / "images"), "--masks", str(folder / "masks"),
                     "--project", "Y", "--approved"], settings) == 0
    assert "Imported 3 images." in capsys.readouterr().out
    return settings


def _parsed_export(kind: str, path: Path):
    """The export file read back: CSV rows, zip names, or the JSON document."""
    import csv
    import io
    import json
    import zipfile

    if kind == "counts":
        return list(csv.DictReader(io.StringIO(path.read_text())))
    if kind == "masks":
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    return json.loads(path.read_text())


@pytest.mark.parametrize("kind", ["counts", "masks", "coco", "via"])
def test_export_through_the_parser_writes_every_kind(imported, kind, tmp_path, capsys):
    out = tmp_path / "out" / f"export.{kind}"
    assert cli.main(["export", kind, "--project", "Y", "--out", str(out)], imported) == 0
    assert f"Wrote {kind} for 3 images to {out}." in capsys.readouterr().out
    assert out.stat().st_size > 0
    found = _parsed_export(kind, out)
    if kind == "counts":
        assert sorted(r["image"] for r in found) == [f"cells_{k}.png" for k in range(3)]
    elif kind == "masks":
        assert len([n for n in found if n.endswith(".png")]) == 3
    elif kind == "coco":
        assert found["categories"][0]["name"] == "yellow cell"
        assert len(found["images"]) == 3 and len(found["annotations"]) == 6
    else:
        files = found["_via_img_metadata"].values()
        assert sorted(len(f["regions"]) for f in files) == [2, 2, 2]


def test_export_of_an_unknown_project_says_so(imported, tmp_path, capsys):
    out = tmp_path / "nothing.csv"
    assert cli.main(["export", "counts", "--project", "Nope", "--out", str(out)], imported) == 2
    assert "Export failed" in capsys.readouterr().err and not out.exists()


def _splits(engine) -> dict[str, str]:
    from db.models import Image

    with Session(engine) as s:
        return {im.original_name: im.split for im in s.query(Image)}


def test_split_a_seeded_share_so_training_finds_train_images(imported, engine, monkeypatch,
                                                             capsys, caplog):
    from db.audit import audit_log
    from db.runs import training_items

    monkeypatch.setenv("CELLTALLY_PASSWORD", "a long enough password")
    assert cli.main(["user", "add", "boss", "--role", "admin"], imported) == 0
    assert cli.main(["user", "add", "ann"], imported) == 0
    share = ["split", "--project", "Y", "--test-share", "0.34", "--seed", "7"]
    assert cli.main(share + ["--user", "ann"], imported) == 2
    assert "for admins, and ann is operator" in caplog.text
    assert cli.main(["split", "--project", "Y", "--test-share", "1.5"], imported) == 2
    assert set(_splits(engine).values()) == {"unassigned"}
    capsys.readouterr()
    assert cli.main(share + ["--user", "boss"], imported) == 0
    assert "1 unassigned image(s) went to test and 2 to train" in capsys.readouterr().out
    assert sorted(_splits(engine).values()) == ["test", "train", "train"]
    with Session(engine) as s:
        [record] = audit_log(s, action="split.random")
        assert record.user_id == s.query(User).filter_by(name="boss").one().id
        assert record.detail["seed"] == 7
        assert len(training_items(s, s.query(Project).one().id, "train")) == 2
    assert cli.main(share, imported) == 0
    assert "no unlocked unassigned images" in capsys.readouterr().out


def test_split_by_hand_leaves_locked_images_and_says_why(imported, engine, capsys, caplog):
    from db.audit import audit_log
    from db.models import Image
    from db.projects import lock_splits

    names = [f"cells_{k}.png" for k in range(3)]
    assert cli.main(["split", "--project", "Y", "--set", "test"] + names, imported) == 0
    with Session(engine) as s, s.begin():
        lock_splits(s, [s.query(Image).filter_by(original_name="cells_1.png").one().id])
    assert cli.main(["split", "--project", "Y", "--set", "train", "cells_0.png", "nope.png"],
                    imported) == 2
    assert "no image called nope.png; nothing was moved" in caplog.text
    assert cli.main(["split", "--project", "Y", "--set", "train"], imported) == 2
    capsys.readouterr()
    assert cli.main(["split", "--project", "Y", "--set", "train"] + names, imported) == 0
    out = capsys.readouterr().out
    assert "Moved 2 image(s) of project Y to train." in out
    assert "Not moved: 1 locked image(s), cells_1.png (test). A run was scored on them" in out
    assert _splits(engine) == {"cells_0.png": "train", "cells_1.png": "test", "cells_2.png": "train"}
    with Session(engine) as s:
        moves = audit_log(s, action="split.move")
        assert len(moves) == 5 and {m.user_id for m in moves} == {None}
