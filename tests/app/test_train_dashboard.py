"""AppTest for issue 13's Train and Dashboard items: promotion asks first and shows both runs'
held-out scores; the Train page warns of hours on a CPU and offers a quick preset; the Dashboard's
curves, axes, Bland-Altman colours, few-images caution and colour-blind palette.

Two runs are added to the shared database (tests/app/conftest.py) for the promotion tests: a strong
one, promoted, and a weak one; the project's previous state is restored after each test.
"""
from __future__ import annotations

import pytest


def _runs_promoted(app_db) -> dict[int, bool]:
    from sqlalchemy import select

    from db.models import ModelRun

    with app_db.session() as s:
        return {r.id: bool(r.promoted) for r in s.scalars(select(ModelRun).where(
            ModelRun.project_id == app_db.project_id))}


@pytest.fixture
def strong_and_weak(app_db, tmp_path):
    """(strong, weak) run ids: F1 0.93 promoted, F1 0.52 not; both with bootstrap intervals in
    their metrics (as training writes them) and no per-image results."""
    from db.models import ModelRun

    before = _runs_promoted(app_db)
    ids = []
    with app_db.session() as s:
        for name, f1, mae, bias, ci in (
                ("strong-run", 0.93, 0.8, 0.1, {"f1": [0.90, 0.95], "mae": [0.5, 1.1],
                                                "bias": [-0.2, 0.4]}),
                ("weak-run", 0.52, 4.5, -3.9, {"f1": [0.41, 0.63], "mae": [3.2, 5.9],
                                               "bias": [-5.1, -2.6]})):
            (tmp_path / name).mkdir()
            run = ModelRun(project_id=app_db.project_id, name=name, run_dir=str(tmp_path / name),
                           threshold=0.5, config={}, promoted=False,
                           metrics={"f1": f1, "mae": mae, "bias": bias, "n_images": 12,
                                    "intervals": ci})
            s.add(run)
            s.flush()
            ids.append(run.id)
    with app_db.session() as s:
        from db.models import ModelRun as M
        for run_id in before:
            s.get(M, run_id).promoted = False
        s.get(M, ids[0]).promoted = True
    yield tuple(ids)
    with app_db.session() as s:
        from db.models import ModelRun as M
        for run_id in ids:
            s.get(M, run_id).promoted = False
        for run_id, flag in before.items():
            s.get(M, run_id).promoted = flag


# ---------------------------------------------------------------- promotion

def test_promotion_shows_both_runs_and_asks_before_promoting(app_as, app_db, strong_and_weak):
    strong, weak = strong_and_weak
    at = app_as("admin", "pages/train.py")
    assert not at.exception, at.exception
    at.selectbox(key="train_promote_pick").set_value(weak).run()
    at.button(key="train_promote").click().run()
    assert not at.exception, at.exception
    # One click promotes nothing: the strong run is still the project's model.
    promoted = _runs_promoted(app_db)
    assert promoted[strong] and not promoted[weak]
    table = next(d.value for d in at.dataframe if "role" in d.value.columns)
    rows = {r["run"]: r for r in table.to_dict("records")}
    assert rows["strong-run"]["role"] == "promoted now" and rows["weak-run"]["role"] == "candidate"
    assert rows["strong-run"]["F1"] == 0.93 and rows["weak-run"]["F1"] == 0.52
    assert rows["strong-run"]["F1 95% CI"] == "0.90 to 0.95"
    assert rows["weak-run"]["MAE 95% CI"] == "3.20 to 5.90"
    assert rows["weak-run"]["bias 95% CI"] == "-5.10 to -2.60"
    assert any("lower held-out F1" in w.value and "0.52" in w.value and "0.93" in w.value
               for w in at.warning), [w.value for w in at.warning]
    at.button(key="train_promote_confirm").click().run()
    assert not at.exception, at.exception
    promoted = _runs_promoted(app_db)
    assert promoted[weak] and not promoted[strong]
    assert any("weak-run is now the project's model" in m.value and "strong-run" in m.value
               for m in at.success), [m.value for m in at.success]
    assert not [b for b in at.button if b.key == "train_promote_confirm"]


def test_promotion_can_be_called_off(app_as, app_db, strong_and_weak):
    strong, weak = strong_and_weak
    at = app_as("admin", "pages/train.py")
    at.selectbox(key="train_promote_pick").set_value(weak).run()
    at.button(key="train_promote").click().run()
    at.button(key="train_promote_keep").click().run()
    assert not at.exception, at.exception
    promoted = _runs_promoted(app_db)
    assert promoted[strong] and not promoted[weak]
    assert not [b for b in at.button if b.key == "train_promote_confirm"]
