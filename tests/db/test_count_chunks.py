"""Count jobs in chunks any worker claims; no remote workers on SQLite; the model package."""
import io
import zipfile
from types import SimpleNamespace

import pytest
import yaml
from sqlalchemy.orm import Session

from db import exporting, jobs
from db.models import Job
from db.projects import create_batch, create_project, register_image
from db.runs import promote_run, register_run
from db.settings import Settings
from db.users import get_user
from tests.db.helpers import picture, project_with_images, user


def test_a_count_is_split_into_chunks_that_workers_claim_once_each(engine):
    with Session(engine) as s, s.begin():
        chunks = jobs.queue_count_chunks(
            s, project_id=None, config={"run_dir": "runs/r"}, chunk_size=3,
            images=[{"name": f"{k}.png", "path": f"images/0{k}/x.png"} for k in range(7)])
        ids = [j.id for j in chunks]
    with Session(engine) as s:
        rows = [s.get(Job, i) for i in ids]
        assert [[e["item"] for e in r.config["images"]] for r in rows] == [[0, 1, 2], [3, 4, 5],
                                                                           [6]]
        assert [e["name"] for r in rows for e in r.config["images"]] == [f"{k}.png"
                                                                         for k in range(7)]
        assert {r.config["batch"] for r in rows} == {ids[0]}
        assert [(r.config["chunk"], r.config["chunks"]) for r in rows] == [(0, 3), (1, 3), (2, 3)]
        assert all(r.config["run_dir"] == "runs/r" and r.kind == "count" for r in rows)
        assert [j.id for j in jobs.batch_jobs(s, ids[0])] == ids
    # Two workers take turns: every chunk is claimed once.
    got = [jobs.claim_next_job(engine, host=h, pid=1) for h in ("a", "b", "a", "b")]
    assert got == [*ids, None]


def test_count_batches_sum_their_chunks(engine):
    with Session(engine) as s, s.begin():
        pid = create_project(s, "counting", stain="red").id
        first = [j.id for j in jobs.queue_count_chunks(
            s, project_id=pid, config={}, chunk_size=2,
            images=[{"name": f"{k}.png", "path": f"images/0{k}/x.png"} for k in range(4)])]
        single = jobs.queue_job(s, "count", project_id=pid, config={"image_ids": [9]}).id

    def batches():
        with Session(engine) as s:
            return jobs.count_batches(s, pid).set_index("batch_id")

    table = batches()
    assert list(table.index) == [single, first[0]]          # newest first
    assert table.loc[first[0], "status"] == "queued" and table.loc[first[0], "n_images"] == 4
    assert table.loc[single, "job_ids"] == [single] and table.loc[single, "n_chunks"] == 1
    jobs.claim_next_job(engine, host="a", pid=1)
    with Session(engine) as s, s.begin():
        jobs.report_progress(s, first[0], 0.5, "Counted 1/2 images (chunk 1 of 2)")
    table = batches()
    assert table.loc[first[0], "status"] == "running"
    assert table.loc[first[0], "progress"] == pytest.approx(0.25)
    assert table.loc[first[0], "message"] == "0 of 2 chunks done; Counted 1/2 images (chunk 1 of 2)"
    with Session(engine) as s, s.begin():
        jobs.finish_job(s, first[0], result={"counts": []})
    assert batches().loc[first[0], "status"] == "running"    # one chunk still queued
    jobs.claim_next_job(engine, host="b", pid=2)
    with Session(engine) as s, s.begin():
        jobs.fail_job(s, first[1], "ValueError: gone")
    table = batches()
    assert table.loc[first[0], "status"] == "failed"
    assert table.loc[first[0], "error"] == "ValueError: gone"


def test_remote_workers_are_refused_on_sqlite(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL"):
        Settings.from_env({"CELLTALLY_WORKERS": "remote",
                           "CELLTALLY_DATA_DIR": str(tmp_path)})
    ok = Settings.from_env({"CELLTALLY_WORKERS": "remote", "CELLTALLY_DATA_DIR": str(tmp_path),
                            "CELLTALLY_DB_URL": "postgresql+psycopg://u@db.example/celltally"})
    assert ok.workers == "remote"


@pytest.fixture
def promoted(engine, storage, tmp_path):
    """A project whose promoted run trained on two FNC images and was tested on a third."""
    import keras

    from core.model import build_cresunet
    from core.postprocess import PostprocessParams
    from core.run import save_run

    with Session(engine) as s, s.begin():
        user(s, "root", role="admin")
        project, images = project_with_images(s, storage, 1, name="fnc-yellow")
        batch = create_batch(s, project.id, user_id=None, source="fnc-v2: /data/fnc/yellow")
        images += [register_image(s, storage, project.id, picture(10 + i), name=f"f{i}.png",
                                  batch_id=batch.id).image for i in range(2)]
        keras.utils.set_random_seed(2)
        run_dir = save_run(tmp_path / "fnc-run", model=build_cresunet(2), config={},
                           postprocess=PostprocessParams.paper(20),
                           thresholds={"best": 0.5, "knee": None, "chosen": 0.5},
                           metrics={"f1": 0.75},
                           manifest={"train": [[images[1].id, None]],
                                     "validation": [[images[2].id, None]],
                                     "test": [[images[0].id, None]]})
        run = register_run(s, project.id, run_dir, job_id=None, name="fnc-run")
        return SimpleNamespace(admin="root", run_id=run.id, project="fnc-yellow")


def test_export_model_writes_the_promoted_runs_package(engine, settings, storage, promoted,
                                                       tmp_path):
    out = tmp_path / "model.zip"
    args = SimpleNamespace(kind="model", project=promoted.project, out=str(out))
    assert exporting.run_export_cli(args, settings, out=io.StringIO()) == 2   # none promoted
    with Session(engine) as s, s.begin():
        promote_run(s, promoted.run_id, actor=get_user(s, promoted.admin))
    said = io.StringIO()
    assert exporting.run_export_cli(args, settings, out=said) == 0
    assert "for 2 images" in said.getvalue()
    with zipfile.ZipFile(out) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        readme = archive.read("README.md").decode()
    assert list(rdf["weights"]) == ["onnx"] and rdf["license"] == "CC-BY-SA-4.0"
    assert "1 training, 1 validation and 1 test images" in readme and "fnc-v2" in readme
