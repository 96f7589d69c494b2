"""Engine settings, migrations from an empty database, and the content-hash store."""
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text

from db.engine import current_revision, head_revision, make_engine, transaction, upgrade
from db.models import Base, Project


def test_upgrade_from_empty_creates_every_table(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'fresh.db'}")
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert upgrade(engine) == head_revision()  # a second run is a no-op


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_migrated_database_is_at_head(engine):
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM images")).scalar() == 0


def test_transaction_commits_rolls_back_and_keeps_rows_readable(engine):
    with transaction(engine) as s:
        kept = Project(name="kept", stain="red")
        s.add(kept)
    assert kept.name == "kept" and kept.id is not None  # not expired by the commit
    with pytest.raises(RuntimeError):
        with transaction(engine) as s:
            s.add(Project(name="lost", stain="red"))
            s.flush()
            raise RuntimeError("the block failed")
    with transaction(engine) as s:
        assert s.scalars(select(Project.name)).all() == ["kept"]
        assert s.scalar(select(func.count()).select_from(Project)) == 1


def test_pages_and_the_seeder_use_the_db_transaction():
    import inspect as pyinspect

    import pages.ui
    import training.demo_project

    # One helper, owned by db: the seeder's own copy is gone and the pages no longer borrow it.
    assert training.demo_project.transaction is transaction
    assert "seed_demo" not in pyinspect.getsource(pages.ui.session)


def test_storage_stores_pixels_once(storage, rng):
    rgb = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    first = storage.put_image(rgb)
    again = storage.put_image(rgb.copy())
    assert not first.existed and again.existed and first.path == again.path
    assert np.array_equal(storage.read_image(first.path), rgb)
    other = storage.put_image(rgb[::-1].copy())
    assert other.sha256 != first.sha256


def test_put_image_keeps_a_matching_png_and_encodes_anything_else(storage, rng):
    from core.io import encode_png
    from db.storage import STORE_PNG_LEVEL

    rgb = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    png = encode_png(rgb, compress_level=9)
    kept = storage.put_image(rgb, encoded=png)
    assert kept.path.read_bytes() == png                      # the caller's file, byte for byte
    other = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    wrong = storage.put_image(other, encoded=png)             # bytes of other pixels: not kept
    assert np.array_equal(storage.read_image(wrong.path), other)
    assert wrong.path.read_bytes() == encode_png(other, compress_level=STORE_PNG_LEVEL)
    rgba = np.dstack([other[::-1], np.full((12, 16), 255, np.uint8)])
    alpha = storage.put_image(other[::-1].copy(), encoded=encode_png(rgba))  # not plain RGB
    assert alpha.path.read_bytes() == encode_png(other[::-1], compress_level=STORE_PNG_LEVEL)
    plain = storage.put_image(rgb[:, ::-1].copy(), encoded=b"not a png")
    assert np.array_equal(storage.read_image(plain.path), rgb[:, ::-1])


def test_storage_masks_and_heatmaps_round_trip(storage):
    mask = np.zeros((10, 10), dtype=np.int32)
    mask[2:5, 2:5] = 7
    stored = storage.put_mask(mask)
    assert stored.path.read_bytes()[:4] == b"\x89PNG"
    assert np.array_equal(storage.read_mask(stored.path), mask > 0)
    prob = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    back = storage.read_heatmap(storage.put_heatmap(prob).path)
    assert np.abs(back - prob).max() <= 0.5 / 255 + 1e-6


def test_run_dirs_are_unique(storage):
    a, b = storage.run_dir("yellow 2024/1"), storage.run_dir("yellow 2024/1")
    assert a != b and a.is_dir() and b.is_dir() and a.parent == storage.root / "runs"


def test_rows_record_paths_below_the_data_dir_and_survive_a_move(engine, settings, rng):
    import shutil

    from sqlalchemy.orm import Session

    from db.masks import save_mask_version
    from db.models import Image, MaskVersion
    from db.projects import create_project, register_image
    from db.storage import Storage
    storage = Storage.from_settings(settings)
    rgb = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    mask = np.zeros((12, 16), bool)
    mask[3:7, 4:9] = True
    with Session(engine) as s, s.begin():
        pid = create_project(s, "P", stain="yellow").id
        image = register_image(s, storage, pid, rgb, name="a.png").image
        version = save_mask_version(s, storage, image.id, mask, based_on=None, source="manual",
                                    author_id=None)
        image_path, mask_path, image_id, version_id = image.path, version.path, image.id, version.id
        old = register_image(s, storage, pid, rgb[::-1].copy(), name="old.png").image
        old.path = str(storage.resolve(old.path))  # a row written before keys: absolute
        old_id = old.id
    assert image_path.startswith("images/") and mask_path.startswith("masks/")
    # A GPU host mounts the shared data dir elsewhere: keys and old absolute rows still read.
    moved = settings.data_dir.parent / "mounted-elsewhere"
    shutil.copytree(settings.data_dir, moved)
    shutil.rmtree(settings.data_dir / "images")
    there = Storage(moved)
    with Session(engine) as s:
        assert np.array_equal(there.read_image(s.get(Image, image_id).path), rgb)
        assert np.array_equal(there.read_mask(s.get(MaskVersion, version_id).path), mask)
        assert np.array_equal(there.read_image(s.get(Image, old_id).path), rgb[::-1])


def test_storage_keys_and_resolve(storage):
    path = storage.path_for("images", "cd" * 32)
    assert storage.key(path) == f"images/cd/{'cd' * 32}.png"
    assert storage.resolve(storage.key(path)) == path
    assert storage.resolve("/not/in/the/store.png") == Path("/not/in/the/store.png")
    assert storage.key("/not/in/the/store.png") == "/not/in/the/store.png"


def test_run_dirs_are_keyed_and_found_after_the_data_dir_moves(tmp_path):
    from db.storage import Storage
    old = Storage(tmp_path / "old")
    run = old.run_dir("yellow-1")
    (run / "config.json").write_text("{}")
    recorded_then = str(run)  # how rows recorded run directories before keys
    assert old.key(run) == "runs/yellow-1"
    (tmp_path / "old").rename(tmp_path / "new")
    new = Storage(tmp_path / "new")
    assert new.resolve("runs/yellow-1") == new.root / "runs" / "yellow-1"
    assert new.resolve(recorded_then) == new.root / "runs" / "yellow-1"
    assert new.resolve("/elsewhere/runs/gone") == Path("/elsewhere/runs/gone")
