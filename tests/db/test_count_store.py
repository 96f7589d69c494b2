"""Counted images belong to the count: kept in the file store and named by the count's jobs,
never project images, until "Add to project" imports them as an ordinary batch."""
import io

import numpy as np
import pytest
import tifffile
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.io import encode_png
from db import exporting, importing, jobs, review
from db.gc import file_references, find_orphans
from db.models import Image, ImportBatch, Job, MaskVersion
from db.projects import get_project
from tests.db.helpers import picture, project_with_images


def _tiff(rgb, um_per_px):
    """An ImageJ TIFF stating its pixel size (pixels per micrometre in the resolution tags)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb, imagej=True, resolution=(1 / um_per_px, 1 / um_per_px),
                     metadata={"unit": "um"})
    return buffer.getvalue()


def _seen(session, project_id):
    """Everything a count must leave alone: sidebar state, review queue, the counts export."""
    state = review.project_state(session, project_id)
    queue = review.review_queue(session, project_id, page_size=1000)
    return (state["n_images"], state["share_reviewed"], queue.total, queue.counts,
            [r.image_id for r in queue.rows], exporting.export_counts(session, project_id),
            session.scalar(select(func.count(ImportBatch.id))))


@pytest.fixture
def counted(engine, settings, storage):
    """A project with one image, and a queued count of two new files and one broken one."""
    with Session(engine) as s, s.begin():
        project, _ = project_with_images(s, storage, 1, name="P")
        pid = project.id
    uploads = [("a.png", encode_png(picture(21))), ("b.tif", _tiff(picture(22), 0.5)),
               ("junk.png", b"not an image")]
    with Session(engine) as s, s.begin():
        before = _seen(s, pid)
        images, problems = importing.store_for_count(s, settings, pid, uploads=uploads)
        chunks = jobs.queue_count_chunks(s, project_id=pid, config={"run_dir": "runs/r"},
                                         images=images, chunk_size=1)
        batch = chunks[0].id
    return pid, before, images, problems, batch


def test_a_count_leaves_the_project_as_it_was(engine, storage, counted):
    pid, before, images, problems, batch = counted
    assert [p["file"] for p in problems] == ["junk.png"]
    assert [e["name"] for e in images] == ["a.png", "b.tif"]
    with Session(engine) as s:
        assert _seen(s, pid) == before
        assert s.scalar(select(func.count(Image.id))) == 1
        chunks = jobs.batch_jobs(s, batch)
        named = [e for j in chunks for e in j.config["images"]]
    # The store holds exactly the pixels read, and the jobs name them in order.
    assert np.array_equal(storage.read_image(named[0]["path"]), picture(21))
    assert np.array_equal(storage.read_image(named[1]["path"]), picture(22))
    assert [e["item"] for e in named] == [0, 1]
    assert named[1]["pixel_size_um"] == pytest.approx(0.5)
    assert (named[0]["height"], named[0]["width"]) == picture(21).shape[:2]


def test_gc_keeps_counted_files_while_the_job_exists(engine, storage, counted):
    _pid, _before, images, _problems, batch = counted
    with Session(engine) as s, s.begin():
        first = jobs.batch_jobs(s, batch)[0]
        heat = storage.key(storage.put_heatmap(np.full((40, 60), 0.5, np.float32)).path)
        jobs.claim_next_job(s, host="h", pid=1)
        jobs.finish_job(s, first.id, result={"counts": [{**first.config["images"][0],
                                                         "count": 0, "heatmap_path": heat}]})
    wanted = {e["path"] for e in images} | {heat}

    def orphans():
        with engine.connect() as conn:
            return {o.key for o in find_orphans(file_references(conn, storage), storage)}

    assert not wanted & orphans()
    with Session(engine) as s, s.begin():
        s.execute(delete(Job))
    assert wanted <= orphans()


def test_add_to_project_imports_the_counted_images_as_a_normal_batch(engine, settings, storage,
                                                                     counted):
    pid, before, images, _problems, batch = counted
    report = importing.import_counted(engine, settings, batch, user_id=None)
    assert [o.name for o in report.imported] == ["a.png", "b.tif"]
    with Session(engine) as s:
        added = {im.original_name: im for im in s.scalars(select(Image).where(
            Image.batch_id == report.batch_id))}
        assert set(added) == {"a.png", "b.tif"}
        assert all(im.review_status == "to_review" and im.project_id == pid
                   for im in added.values())
        # As any import of files without masks: an automatic mask to review.
        assert {s.get(MaskVersion, im.head_version_id).source for im in added.values()} == {"auto"}
        assert added["b.tif"].pixel_size_um == pytest.approx(0.5)
        assert np.array_equal(storage.read_image(added["a.png"].path), picture(21))
        queue = review.review_queue(s, pid, page_size=1000)
        assert queue.total == before[2] + 2
        assert {r.image_id for r in queue.rows} >= {im.id for im in added.values()}
        export = exporting.export_counts(s, pid)
        assert "a.png" in export and "b.tif" in export
        assert s.get(ImportBatch, report.batch_id).source == f"count batch {batch}"
        assert get_project(s, pid).id == pid
    # Asking again adds nothing: the images are the project's now.
    again = importing.import_counted(engine, settings, batch)
    assert not again.imported and {o.reason for o in again.skipped} == {"duplicate"}


def test_a_count_of_a_folder_outside_the_roots_is_refused(engine, settings, counted,
                                                          tmp_path_factory):
    pid = counted[0]
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "x.png").write_bytes(encode_png(picture(3)))
    with Session(engine) as s, pytest.raises(importing.ImportRefused, match="outside"):
        importing.store_for_count(s, settings, pid, folder=str(outside))
    with Session(engine) as s, pytest.raises(ValueError, match="at least one image"):
        importing.store_for_count(s, settings, pid, uploads=[])
