"""Imports under faults and load (SQLite and PostgreSQL): hostile annotation files, oversized
uploads, NUL bytes, interrupted batches, and a database other people are writing to meanwhile.
"""
import json
import os
import pathlib
import struct
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

import core.formats
import core.io
import core.maskfiles
import db.importing as I
import db.storage
from core import io as core_io
from db.engine import make_engine
from db.jobs import claim_next_job, get_job, heartbeat, queue_job, report_progress
from db.masks import save_mask_version
from db.models import Image, ImportBatch, MaskVersion
from db.projects import batch_state, create_project, register_image
from db.settings import Settings

SHAPE = (40, 60)


def _picture(seed, shape=SHAPE):
    return np.random.default_rng(seed).integers(0, 200, shape + (3,), dtype=np.uint8)


def _labels(n=3):
    lab = np.zeros(SHAPE, np.uint16)
    for k in range(n):
        lab[5:15, 4 + 12 * k:16 + 12 * k] = k + 1  # touching boxes
    return lab


@pytest.fixture
def project(engine):
    with Session(engine) as s, s.begin():
        create_project(s, "P", stain="yellow")
    return "P"


def _folder(root, n, *, masks=None, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        core_io.write_image(root / f"img{k:02d}.png", _picture(seed + k))
        if masks is not None:
            masks.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(masks / f"img{k:02d}.tif", _labels(1 + k % 3))
    return root


def _impatient(engine, wait_ms):
    """Another engine on the same database whose statements give up a lock wait after wait_ms."""
    other = make_engine(engine.url.render_as_string(hide_password=False))
    sqlite = other.dialect.name == "sqlite"

    @event.listens_for(other, "connect")
    def _wait(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={wait_ms}" if sqlite
                       else f"SET lock_timeout = '{wait_ms}ms'")
        cursor.close()
        if not sqlite:
            dbapi_connection.commit()

    return other


def _count(engine, what):
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(what))


# ------------------------------------------------------------------ item 6: the write lock

def test_each_image_commits_alone_and_no_file_is_touched_inside(engine, settings, project,
                                                                monkeypatch):
    folder = _folder(settings.data_dir / "in", 4, masks=settings.data_dir / "masks")
    _folder(settings.data_dir / "in2", 2, seed=50)
    for p in (settings.data_dir / "in2").iterdir():
        p.rename(folder / f"bare_{p.name}")  # two images without masks: automatic masks
    state = {"open": False}
    touched = []
    event.listen(engine, "begin", lambda conn: state.update(open=True))
    event.listen(engine, "commit", lambda conn: state.update(open=False))
    event.listen(engine, "rollback", lambda conn: state.update(open=False))

    def guard(owner, name):
        real = getattr(owner, name)

        def watched(*args, **kwargs):
            if state["open"]:
                touched.append(f"{owner.__name__}.{name}")
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, name, watched)

    for owner, name in [(core.io, "read_microscopy"), (core.io, "_write"), (PILImage, "open"),
                        (core.maskfiles, "read_mask_file"), (core.formats, "regions_to_labels"),
                        (db.storage, "_write_bytes"), (pathlib.Path, "read_bytes"),
                        (pathlib.Path, "write_bytes")]:
        guard(owner, name)
    other = make_engine(engine.url.render_as_string(hide_password=False))
    committed = []
    report = I.import_path(engine, settings, folder, project="P",
                           masks=settings.data_dir / "masks",
                           progress=lambda done, total, name: committed.append(
                               (done, _count(other, Image))))
    other.dispose()
    assert len(report.imported) == 6 and {o.mask for o in report.imported} == {"import", "auto"}
    assert touched == []
    # every image was visible to others as soon as it was imported, not at the end
    assert committed == [(k, k) for k in range(1, 7)]


def test_a_mask_save_during_a_20_image_import_succeeds(engine, settings, storage, project):
    with Session(engine) as s, s.begin():
        target = register_image(s, storage, 1, _picture(99), name="edit.png").image
        head = save_mask_version(s, storage, target.id, _labels(), based_on=None, source="auto",
                                 author_id=None)
        target_id, head_id = target.id, head.id
    folder = _folder(settings.data_dir / "twenty", 20, masks=settings.data_dir / "twenty_masks")
    started, out = threading.Event(), {}

    def slowly(done, total, name):
        started.set()
        time.sleep(0.05)  # between commits: a real import decodes and stores here

    def run():
        out["report"] = I.import_path(engine, settings, folder, project="P",
                                      masks=settings.data_dir / "twenty_masks", progress=slowly)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60)
    saver = _impatient(engine, 300)  # gives up after 0.3 s of waiting for the lock
    try:
        with Session(saver) as s, s.begin():
            saved = save_mask_version(s, storage, target_id, _labels(2), based_on=head_id,
                                      source="manual", author_id=None)
            saved_id = saved.id
    finally:
        worker.join()
        saver.dispose()
    assert len(out["report"].imported) == 20
    with Session(engine) as s:
        assert s.get(Image, target_id).head_version_id == saved_id


class _Stop(BaseException):
    """Stands for the process being stopped mid-import (Ctrl-C, a page rerun)."""


def test_running_an_interrupted_import_again_completes_it(engine, settings, project):
    folder = _folder(settings.data_dir / "in", 5, masks=settings.data_dir / "masks")

    def stop_after_two(done, total, name):
        if done == 2:
            raise _Stop

    with pytest.raises(_Stop):
        I.import_path(engine, settings, folder, project="P", masks=settings.data_dir / "masks",
                      progress=stop_after_two)
    with Session(engine) as s:
        [batch] = s.scalars(select(ImportBatch)).all()
        assert batch_state(batch) == "interrupted"
        assert s.scalar(select(func.count(Image.id))) == 2
    report = I.import_path(engine, settings, folder, project="P", masks=settings.data_dir / "masks")
    assert report.batch_id == batch.id
    assert len(report.imported) == 5 and not report.skipped
    assert sum("before the import was interrupted" in o.message for o in report.imported) == 2
    with Session(engine) as s:
        assert batch_state(s.get(ImportBatch, batch.id)) == "done"
        assert s.scalar(select(func.count(ImportBatch.id))) == 1
        assert s.scalar(select(func.count(Image.id))) == 5
        assert s.scalar(select(func.count(MaskVersion.id))) == 5
        stored = s.get(ImportBatch, batch.id).report
    assert len(stored["imported"]) == 5


def test_progress_and_heartbeats_wait_out_a_locked_database(engine):
    with Session(engine) as s, s.begin():
        job_id = queue_job(s, "train", config={}).id
    claim_next_job(engine, host="h", pid=1)
    holding, release = threading.Event(), threading.Event()

    def hold():
        if engine.dialect.name == "sqlite":
            import sqlite3

            raw = sqlite3.connect(engine.url.database, isolation_level=None)
            raw.execute("BEGIN IMMEDIATE")  # the write lock, as a long import held it
            holding.set()
            release.wait(10)
            raw.execute("ROLLBACK")
            raw.close()
        else:
            from db.models import Job

            with Session(engine) as s, s.begin():
                s.execute(select(Job).where(Job.id == job_id).with_for_update())
                holding.set()
                release.wait(10)

    locker = threading.Thread(target=hold)
    locker.start()
    assert holding.wait(10)
    threading.Timer(0.6, release.set).start()
    impatient = _impatient(engine, 100)
    try:
        assert report_progress(impatient, job_id, 0.5, "halfway") is False
        assert heartbeat(impatient, job_id) is False
    finally:
        release.set()
        locker.join()
        impatient.dispose()
    with Session(engine) as s:
        job = get_job(s, job_id)
        assert (job.status, job.progress, job.message) == ("running", 0.5, "halfway")


# ------------------------------------------------------------------ item 9: bad files

def _bad_annotation_files(folder):
    """One good COCO file, a non-ASCII one, and one file per way a JSON broke the import."""
    h, w = SHAPE
    image = lambda name: {"id": 1, "file_name": name, "height": h, "width": w}  # noqa: E731
    box = [[10, 10, 30, 10, 30, 25, 10, 25]]
    files = {
        "good.json": {"images": [image("good.png")],
                      "annotations": [{"image_id": 1, "segmentation": box}]},
        "donn\u00e9es.json": {"images": [image("zellen_\u00e4\u00f6.png")],
                              "annotations": [{"image_id": 1, "segmentation": box}]},
        "typed.json": {"images": [image("t.png")], "annotations": 5},  # TypeError
        "via_typed.json": {"_via_img_metadata": {"x": {"filename": "t.png", "regions": 5}}},
        "surrogate.json": {"images": [image("\ud800lone.png")], "annotations": []},
    }
    for name, doc in files.items():
        (folder / name).write_text(json.dumps(doc), encoding="utf-8")
    # json.dumps never writes these; tools and attackers do
    (folder / "infinite.json").write_text(
        '{"images": [{"id": 1, "file_name": "t.png", "height": 40, "width": Infinity}]}')
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "nan.json").write_text(json.dumps({"_via_img_metadata": {"n": {
        "filename": "n.png", "regions": [{"shape_attributes": {
            "name": "polygon", "all_points_x": [1, 9, 5], "all_points_y": [1, 1, 1]}}]}}})
        .replace("9", "NaN"))
    (folder / "far.json").write_text(json.dumps({"_via_img_metadata": {"f": {
        "filename": "f.png", "regions": [{"shape_attributes": {
            "name": "polygon", "all_points_x": [1, 5000, 5], "all_points_y": [1, 1, 9]}}]}}}))
    (folder / "memory.json").write_text('{"images": [], "MEMORY": 1}')


def test_bad_annotation_files_are_refused_by_name_and_the_rest_imported(engine, settings,
                                                                        project, monkeypatch):
    folder = settings.data_dir / "ann"
    folder.mkdir()
    for k, name in enumerate(["good.png", "zellen_\u00e4\u00f6.png", "t.png", "n.png", "f.png"]):
        core_io.write_image(folder / name, _picture(k))
    _bad_annotation_files(folder)
    real = json.loads

    def loads(text, *args, **kwargs):  # the allocation failure a huge file causes
        if isinstance(text, str) and '"MEMORY"' in text:
            raise MemoryError
        return real(text, *args, **kwargs)

    monkeypatch.setattr(core.formats.json, "loads", loads)
    report = I.import_path(engine, settings, folder, project="P", fmt="coco",
                           options=I.ImportOptions(prelabel=False))
    assert sorted(o.name for o in report.imported) == ["good.png", "zellen_\u00e4\u00f6.png"]
    skipped = {o.name: o for o in report.skipped}
    for name in ("typed.json", "via_typed.json", "infinite.json", "deep.json", "memory.json"):
        assert skipped[name].reason == "corrupt" and skipped[name].message.startswith(name)
    assert "not finite" in skipped["n.png"].message and "nan.json" in skipped["n.png"].message
    assert "far outside its image" in skipped["f.png"].message
    assert "far.json: f.png: region 1" in skipped["f.png"].message
    assert skipped["\ufffdlone.png"].reason == "not found"
    with Session(engine) as s:
        batch = s.get(ImportBatch, report.batch_id)
        assert batch.status == "done" and len(batch.report["skipped"]) == len(report.skipped)


def test_one_bad_json_among_uploads_fails_only_itself(engine, settings, project):
    files = [("a.png", core_io.write_image(None, _picture(1))),
             ("b.png", core_io.write_image(None, _picture(2))),
             ("bad.json", b'{"images": [{"id": 1, "file_name": "a.png"}], "annotations": 5}')]
    report = I.import_uploads(engine, settings, "P", files)
    assert sorted(o.name for o in report.imported) == ["a.png", "b.png"]
    [bad] = report.skipped
    assert (bad.name, bad.reason) == ("bad.json", "corrupt")


def test_a_nul_byte_in_a_file_name_does_not_fail_the_batch(engine, settings, project):
    files = [("cells\x00.png", core_io.write_image(None, _picture(1))),
             ("ok.png", core_io.write_image(None, _picture(2)))]
    report = I.import_uploads(engine, settings, "P", files)
    assert sorted(o.name for o in report.imported) == ["cells\ufffd.png", "ok.png"]
    # A name that is not UTF-8 on disk (Latin-1 here) reaches Python as a lone surrogate.
    folder = settings.data_dir / "latin"
    folder.mkdir()
    (pathlib.Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png"))
     .write_bytes(core_io.write_image(None, _picture(3))))
    found = I.import_path(engine, settings, folder, project="P")
    assert [o.name for o in found.imported] == ["caf\ufffd.png"]
    with Session(engine) as s:
        names = set(s.scalars(select(Image.original_name)))
        assert names == {"cells\ufffd.png", "ok.png", "caf\ufffd.png"}
        assert s.get(ImportBatch, report.batch_id).status == "done"


def test_an_fnc_image_without_its_mask_says_so(engine, settings, project):
    root = settings.data_dir / "fnc1"
    images, masks = root / "all_images" / "images", root / "all_masks" / "masks"
    _folder(images, 2)
    masks.mkdir(parents=True)
    core_io.write_mask(masks / "img00.png", _labels() > 0)
    report = I.import_path(engine, settings, root, project="P")
    got = {o.name: o for o in report.imported}
    assert got["img00.png"].mask == "import" and got["img01.png"].mask == "auto"
    assert any("img01.png has no mask in all_masks/masks, so it has no ground truth" in n
               for n in got["img01.png"].notes)
    assert any("img01.png has no mask" in line for line in report.lines())
    with Session(engine) as s:
        assert s.get(Image, got["img01.png"].image_id).review_status == "to_review"


def test_a_duplicate_keeps_the_mask_that_came_with_it(engine, settings, storage, project):
    first = _folder(settings.data_dir / "first", 1)
    I.import_path(engine, settings, first, project="P")  # an automatic mask
    again, masks = settings.data_dir / "again", settings.data_dir / "again_masks"
    _folder(again, 1, masks=masks)
    tifffile.imwrite(masks / "img00.tif", _labels(3))
    report = I.import_path(engine, settings, again, project="P", masks=masks)
    [outcome] = report.updated
    assert (outcome.reason, outcome.mask) == ("duplicate", "import")
    assert "img00.tif" in outcome.message and "added the mask" in report.summary()
    with Session(engine) as s:
        image = s.get(Image, outcome.image_id)
        head = s.get(MaskVersion, image.head_version_id)
        assert (head.source, head.object_count) == ("import", 3)
        manual = save_mask_version(s, storage, image.id, _labels(2), based_on=head.id,
                                   source="manual", author_id=None)
        s.commit()
        manual_id = manual.id
    tifffile.imwrite(masks / "img00.tif", _labels(1))
    report = I.import_path(engine, settings, again, project="P", masks=masks)
    [skipped] = report.skipped
    assert skipped.reason == "duplicate" and "people have already reviewed" in skipped.message
    with Session(engine) as s:
        assert s.get(Image, skipped.image_id).head_version_id == manual_id


def test_images_under_two_pixels_are_refused(engine, settings, project):
    files = [("line.png", core_io.write_image(None, _picture(1, (1, 50)))),
             ("ok.png", core_io.write_image(None, _picture(2)))]
    report = I.import_uploads(engine, settings, "P", files)
    [skipped] = report.skipped
    assert (skipped.name, skipped.reason) == ("line.png", "too small")
    assert "50 x 1 px" in skipped.message and [o.name for o in report.imported] == ["ok.png"]


# ------------------------------------------------------------------ item 3: oversized uploads

def _blank_png(rows, cols):
    """A grey PNG of rows x cols zeros, compressed row by row (never held whole in memory)."""
    pack = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                               + struct.pack(">I", zlib.crc32(kind + body)))
    deflate = zlib.compressobj(9)
    row = bytes(cols + 1)
    idat = b"".join(deflate.compress(row) for _ in range(rows)) + deflate.flush()
    header = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + pack(b"IHDR", header) + pack(b"IDAT", idat)
            + pack(b"IEND", b""))


def test_uploads_over_the_pixel_limit_are_refused_before_decoding(engine, settings, project):
    assert Settings.from_env({}).max_upload_pixels == 40_000_000
    huge = _blank_png(10_000, 10_000)  # 100 megapixels in about 100 KB
    fine = core_io.write_image(None, _picture(1))
    tracemalloc.start()
    report = I.import_uploads(engine, settings, "P", [("huge.png", huge), ("fine.png", fine)])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [o.name for o in report.imported] == ["fine.png"]
    [refused] = report.skipped
    assert (refused.name, refused.reason) == ("huge.png", "too large")
    assert "100 megapixels, more than the 40 megapixels an upload may have" in refused.message
    assert peak < 64 * 2**20  # decoding it would take 100 MB for the grey plane alone
    # The limit is for uploads: a folder import of the same small file is not held to it.
    small = settings.with_(max_upload_pixels=1000)
    report = I.import_uploads(engine, small, "P", [("fine2.png", core_io.write_image(
        None, _picture(2)))])
    assert [o.reason for o in report.skipped] == ["too large"]
    folder = settings.data_dir / "fine"
    folder.mkdir()
    core_io.write_image(folder / "fine2.png", _picture(2))
    assert len(I.import_path(engine, small, folder, project="P").imported) == 1
