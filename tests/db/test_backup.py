"""A backup is the whole installation: restored into a new SQLite or PostgreSQL installation,
images, masks and heatmaps read back, runs load, counts are the same; damage and non-empty
targets are refused before anything is written; ``gc`` finds what nothing names."""
import json
import os
import stat
import tarfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from skimage.draw import disk
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db import cli, exporting
from db.engine import current_revision, head_revision, make_engine, upgrade
from db.gc import file_references, find_orphans
from db.jobs import queue_job
from db.masks import approve, save_mask_version
from db.models import Image, ImageResult, MaskVersion, ModelRun, Project
from db.projects import create_project, register_image
from db.runs import register_run, run_path, save_image_result
from db.settings import Settings
from db.storage import Storage
from db.users import create_user

from .conftest import PG_ENV

SHAPE = (48, 64)


def _picture(seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 40, SHAPE + (3,), dtype=np.uint8)
    labels = np.zeros(SHAPE, np.int32)
    for k in range(1 + seed % 3):
        rr, cc = disk((12 + 10 * k, 14 + 16 * k), 5, shape=SHAPE)
        rgb[rr, cc] = (210, 170, 20)
        labels[rr, cc] = k + 1
    return rgb, labels


def _settings(root: Path, url: str | None = None) -> Settings:
    data = root / "data"
    return Settings(data_dir=data, db_url=url or f"sqlite:///{root / 'ct.db'}")


def _write_run(path: Path, model_bytes: bytes) -> Path:
    """A run directory as core.run writes one (the model file's bytes are what a restore must
    bring back unchanged; loading the network itself is core.run's tested business)."""
    from core.postprocess import PostprocessParams

    path.mkdir(parents=True, exist_ok=True)
    params = PostprocessParams.paper(cell_diameter=10)
    (path / "model.keras").write_bytes(model_bytes)
    (path / "config.json").write_text(json.dumps({"base_filters": 2,
                                                  "postprocess": params.to_dict()}))
    (path / "thresholds.json").write_text(json.dumps({"best": 0.5, "knee": 0.6, "chosen": 0.55}))
    (path / "metrics.json").write_text(json.dumps({"f1": 0.8}))
    (path / "manifest.json").write_text(json.dumps({"train": [], "validation": [], "test": []}))
    (path / "checkpoint").mkdir(exist_ok=True)
    (path / "checkpoint" / "state.json").write_text('{"epoch": 3}')
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A SQLite installation with images, mask versions, an approval, a run below the data dir
    with scored heatmaps, a run outside it, a count job naming a heatmap, and orphans."""
    root = tmp_path_factory.mktemp("source")
    settings = _settings(root)
    engine = make_engine(settings)
    upgrade(engine)
    storage = Storage.from_settings(settings)
    outside = _write_run(root / "elsewhere" / "demo-run", b"outside model")
    with Session(engine) as s, s.begin():
        create_user(s, "ann", "a long password", role="admin")
        project = create_project(s, "Mice", stain="yellow", pixel_size_um=0.5)
        image_ids = []
        for i in range(3):
            rgb, labels = _picture(i)
            image = register_image(s, storage, project.id, rgb, name=f"img{i}.png",
                                   split="test" if i else "train").image
            v = save_mask_version(s, storage, image.id, labels > 0, based_on=None,
                                  source="import", author_id=None)
            if i:
                save_mask_version(s, storage, image.id, labels == 1, based_on=v.id,
                                  source="manual", author_id=None, note="kept one")
            approve(s, image.id, user_id=None)
            image_ids.append(image.id)
        run_dir = _write_run(storage.run_dir("trained"), os.urandom(3000))
        run = register_run(s, project.id, run_dir, job_id=None, storage=storage)
        register_run(s, project.id, outside, job_id=None, name="outside")
        for n, image_id in enumerate(image_ids[1:]):
            heat = storage.put_heatmap(np.full(SHAPE, 0.1 + 0.3 * n, np.float32)).path
            # One row as today's rows (a key), one as older rows (an absolute path).
            save_image_result(s, run.id, image_id, {"tp": 1, "fp": 0, "fn": n, "n_true": 1 + n,
                                                    "n_pred": 1, "iou": 0.7},
                              heatmap_path=storage.key(heat) if n else heat)
        counted = storage.key(storage.put_heatmap(np.full(SHAPE, 0.9, np.float32)).path)
        queue_job(s, "count", project_id=project.id,
                  config={"run_dir": storage.key(run_dir), "image_ids": image_ids}).result = {
            "counts": [{"image_id": image_ids[0], "heatmap_path": counted}]}
    (settings.data_dir / "session.key").write_text("ab" * 32)
    orphan = storage.key(storage.put_image(_picture(7)[0]).path)
    (storage.root / "runs" / "lost-a1").mkdir()
    (storage.root / "runs" / "lost-a1" / "model.keras").write_bytes(b"lost attempt")
    archive = root / "backups" / "site.tar"
    assert cli.main(["backup", str(archive)], settings) == 0
    with Session(engine) as s:
        counts = exporting.export_counts(s, "Mice")
    engine.dispose()
    return {"settings": settings, "archive": archive, "counts": counts, "orphan": orphan,
            "counted": counted, "outside": outside, "storage": storage}


def test_the_archive_is_private_and_holds_what_the_rows_name(source):
    archive = source["archive"]
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest["format"] == "celltally-backup" and manifest["engine"] == "sqlite"
    assert manifest["revision"] == head_revision()
    assert set(manifest["sha256"]) == names - {"manifest.json"}
    assert {"dump/images.jsonl.gz", "dump/mask_versions.jsonl.gz", "dump/users.jsonl.gz",
            "dump/jobs.jsonl.gz"} <= names
    assert manifest["rows"]["images"] == 3 and manifest["rows"]["mask_versions"] == 5
    assert f"files/{source['counted']}" in names          # named only by a job's JSON
    assert "files/runs/trained/checkpoint/state.json" in names
    assert f"files/{source['orphan']}" not in names and not any("lost-a1" in n for n in names)
    assert not any("session.key" in n for n in names)
    assert manifest["outside_runs"] == [str(source["outside"])]


def _check_restored(settings: Settings, source) -> None:
    """Every stored file reads back as before, runs load, counts are identical, ids go on."""
    from core.run import load_run

    engine = make_engine(settings)
    storage = Storage.from_settings(settings)
    old = source["storage"]
    assert current_revision(engine) == head_revision()
    with Session(engine) as s:
        images = s.scalars(select(Image).order_by(Image.id)).all()
        assert [im.original_name for im in images] == ["img0.png", "img1.png", "img2.png"]
        for im in images:
            assert np.array_equal(storage.read_image(im.path), old.read_image(im.path))
            assert im.head_version_id is not None
        for v in s.scalars(select(MaskVersion)):
            assert np.array_equal(storage.read_labels(v.path), old.read_labels(v.path))
        heats = [r.heatmap_path for r in s.scalars(select(ImageResult).order_by(ImageResult.id))]
        assert [round(float(storage.read_heatmap(h).mean()), 2) for h in heats] == [0.1, 0.4]
        run = s.scalars(select(ModelRun).where(ModelRun.name == "trained")).one()
        loaded = load_run(run_path(run, storage), with_model=False)
        assert loaded.threshold == 0.55 and run_path(run, storage).is_relative_to(storage.root)
        assert ((run_path(run, storage) / "model.keras").read_bytes()
                == (old.root / run.run_dir / "model.keras").read_bytes())
        assert exporting.export_counts(s, "Mice") == source["counts"]
    with Session(engine) as s, s.begin():
        extra = create_project(s, "After", stain="red")    # the ids go on past the restored rows
        assert extra.id > s.scalar(select(Project.id).where(Project.name == "Mice"))
    assert not (settings.data_dir / "session.key").exists()
    engine.dispose()


def test_sqlite_to_sqlite(source, tmp_path, capsys):
    target = _settings(tmp_path)
    assert cli.main(["restore", str(source["archive"])], target) == 0
    out = capsys.readouterr().out
    assert "Restored" in out and "missing here" not in out   # the outside run still exists
    _check_restored(target, source)


@pytest.fixture
def empty_pg_url():
    """An empty PostgreSQL schema (no tables at all), dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    schema = f"ct_restore_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.mark.pg
def test_sqlite_to_postgresql_is_how_a_lab_moves(source, tmp_path, empty_pg_url, capsys):
    target = _settings(tmp_path, empty_pg_url)
    outside = source["outside"]
    hidden = outside.with_name("demo-run.away")
    outside.rename(hidden)  # this machine lacks the run kept outside the data dir
    try:
        assert cli.main(["restore", str(source["archive"])], target) == 0
    finally:
        hidden.rename(outside)
    assert str(outside) in capsys.readouterr().out        # listed as missing
    _check_restored(target, source)


def _untouched(settings: Settings) -> bool:
    db_file = Path(make_engine(settings).url.database or "")
    return not db_file.exists() and not any(settings.data_dir.rglob("*.png"))


def test_a_damaged_archive_is_refused_before_anything_is_written(source, tmp_path, caplog):
    bad = tmp_path / "bad.tar"
    data = bytearray(source["archive"].read_bytes())
    with tarfile.open(source["archive"]) as tar:
        member = tar.getmember("dump/images.jsonl.gz")
        data[member.offset_data + 20] ^= 0xFF
    bad.write_bytes(bytes(data))
    target = _settings(tmp_path / "t")
    assert cli.main(["restore", str(bad)], target) == 2
    assert "does not match its checksum" in caplog.text
    assert not Path(target.db_url.removeprefix("sqlite:///")).exists()
    assert not target.data_dir.exists() or not any(target.data_dir.rglob("*"))


def test_a_target_with_rows_or_files_is_refused(source, tmp_path, caplog):
    has_rows = _settings(tmp_path / "rows")
    assert cli.main(["project", "create", "Here", "--stain", "red"], has_rows) == 0
    assert cli.main(["restore", str(source["archive"])], has_rows) == 2
    assert "already has rows" in caplog.text
    with Session(make_engine(has_rows)) as s:
        assert s.scalars(select(Project.name)).all() == ["Here"]
    has_files = _settings(tmp_path / "files")
    Storage.from_settings(has_files).put_mask(np.eye(4, dtype=bool))
    assert cli.main(["restore", str(source["archive"])], has_files) == 2
    assert "holds files" in caplog.text
    assert not Path(has_files.db_url.removeprefix("sqlite:///")).exists()


def test_a_mistyped_database_url_backs_up_nothing_and_creates_nothing(tmp_path, caplog):
    typo = Settings(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path / 'cetlally.db'}")
    out = tmp_path / "b.tar"
    assert cli.main(["backup", str(out)], typo) == 2
    assert "There is no database" in caplog.text
    assert not out.exists() and not (tmp_path / "cetlally.db").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "data"] or not list(tmp_path.iterdir())
    down = Settings(data_dir=tmp_path / "data",
                    db_url="postgresql+psycopg://nobody@127.0.0.1:9/nothing")
    assert cli.main(["backup", str(out)], down) == 2
    assert "Cannot reach the database" in caplog.text and not out.exists()
    assert cli.main(["gc"], typo) == 2 and not (tmp_path / "cetlally.db").exists()


def test_gc_lists_only_what_nothing_names_and_deletes_only_old_files(source, tmp_path, capsys):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(source["settings"].data_dir.parent, root)
    settings = _settings(root)
    storage = Storage.from_settings(settings)
    temp = storage.root / "masks" / "ab" / ".x.png.123.ffff.tmp"
    temp.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(b"half a png")
    before = sorted(p for p in storage.root.rglob("*") if p.is_file())
    assert cli.main(["gc"], settings) == 0
    out = capsys.readouterr().out
    listed = [line.split("\t")[0] for line in out.splitlines() if "\t" in line]
    assert sorted(listed) == sorted([source["orphan"], "runs/lost-a1",
                                     "masks/ab/.x.png.123.ffff.tmp"])
    assert "3 unreferenced" in out and "Nothing was changed" in out
    assert sorted(p for p in storage.root.rglob("*") if p.is_file()) == before
    # --delete: the two made "two days ago" go, the fresh temporary file stays.
    old = time.time() - 2 * 86400
    for key in (source["orphan"], "runs/lost-a1/model.keras", "runs/lost-a1"):
        os.utime(storage.root / key, (old, old))
    assert cli.main(["gc", "--delete"], settings) == 0
    assert "Deleted 2" in capsys.readouterr().out
    assert not (storage.root / source["orphan"]).exists()
    assert not (storage.root / "runs" / "lost-a1").exists() and temp.exists()
    engine = make_engine(settings)
    with engine.connect() as conn:
        refs = file_references(conn, storage)
        assert [o.key for o in find_orphans(refs, storage)] == ["masks/ab/.x.png.123.ffff.tmp"]
    for key in refs.files:
        assert (storage.root / key).is_file(), key
    engine.dispose()
