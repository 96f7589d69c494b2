"""AppTest for every page of the workbench's first half: each allowed role, each refused one,
and one scripted interaction per page."""
import time

import numpy as np
import pytest

from pages.ui import TOKEN_KEY

EDITORS = ("operator", "expert", "admin")
REFUSED_EDIT = ("viewer",)


def _texts(at, kind="error"):
    return [e.value for e in getattr(at, kind)]


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _fields(at, label):
    return [w for w in at.text_input if w.label == label]


# ---------------------------------------------------------------- sign-in, routing

def test_signed_out_sees_only_sign_in(app_as):
    at = app_as(None)
    assert not at.exception
    assert at.title[0].value == "CellTally"
    assert _fields(at, "Name") and _fields(at, "Password")


def test_sign_in_wrong_password_says_nothing_specific_then_right_one(app_as):
    at = app_as(None)
    _fields(at, "Name")[0].input("operator")
    _fields(at, "Password")[0].input("wrong-password")
    _button(at, "Sign in").click().run()
    [msg] = _texts(at)
    assert "name or the password" in msg
    _fields(at, "Name")[0].input("nobody")
    _fields(at, "Password")[0].input("whatever-password")
    _button(at, "Sign in").click().run()
    assert _texts(at) == [msg]            # same words whether the name exists or not
    time.sleep(2)                         # this client's delay after one wrong password
    _fields(at, "Name")[0].input("operator")
    _fields(at, "Password")[0].input("operator-demo")
    _button(at, "Sign in").click().run()
    at.switch_page("pages/account.py").run()  # AppTest stays on the sign-in page's address
    assert not at.exception and not _fields(at, "Password")
    assert "**operator**" in " ".join(m.value for m in at.sidebar.markdown)


def test_after_five_wrong_passwords_in_a_minute_the_page_refuses_the_right_one(app_as, app_db):
    """The per-account cap holds for a minute whatever the clock of a loaded machine does (a
    client's own delay of 2^k s could pass between two AppTest runs)."""
    from db import users

    with app_db.session() as s:
        if users.get_user(s, "locky") is None:
            users.create_user(s, "locky", "locky-password", role="viewer")
    for i in range(5):  # five strangers, one wrong guess each: the account's allowance is spent
        with app_db.session() as s, pytest.raises(users.AuthenticationError):
            users.authenticate(s, "locky", "not-the-password", client=f"stranger-{i}")
    at = app_as(None)
    _fields(at, "Name")[0].input("locky")
    _fields(at, "Password")[0].input("locky-password")
    _button(at, "Sign in").click().run()
    assert TOKEN_KEY not in at.session_state and _fields(at, "Password")
    assert "name or the password" in _texts(at)[0]


@pytest.mark.parametrize("role", ("admin", "expert", "operator", "viewer"))
def test_sidebar_shows_user_project_and_state(app_as, role):
    at = app_as(role, "pages/account.py")
    assert not at.exception
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert role in side
    labels = [m.label for m in at.sidebar.metric]
    assert {"Images", "Reviewed", "Cells pending adjudication"} <= set(labels)


# ---------------------------------------------------------------- account, admin

@pytest.mark.parametrize("role", ("admin", "expert", "operator", "viewer"))
def test_account_page_changes_own_password(app_as, app_db, role):
    from db import users

    name = f"acct-{role}"
    with app_db.session() as s:
        if users.get_user(s, name) is None:
            users.create_user(s, name, "first-password", role=role)
    at = app_as(name, "pages/account.py")
    assert not at.exception and not _texts(at)
    _fields(at, "Current password")[0].input("first-password")
    _fields(at, "New password")[0].input("second-password")
    _fields(at, "Repeat the new password")[0].input("second-password")
    _button(at, "Change password").click().run()
    assert _texts(at, "success")
    with app_db.session() as s:
        assert users.authenticate(s, name, "second-password").name == name


@pytest.mark.parametrize("role", ("expert", "operator", "viewer"))
def test_admin_page_refused_for_others(app_as, page_as, role):
    at = app_as(role, None)
    with pytest.raises(ValueError):   # not even registered in their navigation
        at.switch_page("pages/admin.py").run()
    # Forcing the page script anyway is refused on the server side.
    direct = page_as(role, "pages/admin.py")
    assert any("needs the admin role" in m for m in _texts(direct))
    assert not direct.text_input


def test_pages_refuse_signed_out_users(page_as):
    for page in ("pages/account.py", "pages/admin.py"):
        at = page_as(None, page)
        assert any("Sign in first" in m for m in _texts(at))


def test_admin_creates_user_and_disables_account(app_as, app_db):
    from db import users

    at = app_as("admin", "pages/admin.py")
    assert not at.exception
    _fields(at, "Name")[0].input("newbie")
    _fields(at, "Initial password")[0].input("newbie-password")
    at.selectbox[[s.label for s in at.selectbox].index("Role")].set_value("viewer")
    _button(at, "Create user").click().run()
    assert any("Created newbie" in m for m in _texts(at, "success")), _texts(at)
    at.selectbox[[s.key for s in at.selectbox].index("able_user")].set_value("newbie").run()
    _button(at, "Disable account").click().run()
    with app_db.session() as s:
        assert users.get_user(s, "newbie").disabled


# ---------------------------------------------------------------- review, correct, import

PAGES = ("pages/review.py", "pages/correct.py", "pages/import_images.py")


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role", EDITORS)
def test_editor_pages_open_for_editors(app_as, page, role):
    at = app_as(role, page)
    assert not at.exception, at.exception
    assert not _texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_editor_pages_refused_for_viewers(app_as, page_as, page):
    at = app_as("viewer")
    with pytest.raises(ValueError):
        at.switch_page(page).run()
    direct = page_as("viewer", page)
    assert any("needs the operator or expert or admin role" in m for m in _texts(direct))


def _select(at, label_start):
    return next(w for w in at.selectbox if w.label.startswith(label_start))


def test_review_keep_unsure_and_approve(app_as, app_db):
    from db import adjudication, masks

    at = app_as("operator", "pages/review.py")
    image_id = at.session_state["rv_image"]
    _select(at, "Pick an object").set_value(1).run()
    _button(at, "Keep").click().run()
    _select(at, "Pick an object").set_value(2).run()
    at.text_input(key="rv_reason").input("dim, maybe an artefact")
    _button(at, "Unsure").click().run()
    assert not at.exception
    with app_db.session() as s:
        verdicts = {(d.label, d.verdict) for d in adjudication.decisions(s, image_id)}
        queue = adjudication.adjudication_queue(s, app_db.project_id)
    assert {(1, "keep"), (2, "unsure")} <= verdicts
    assert (queue["image_id"] == image_id).any()
    approve = next(b for b in at.button if b.label.startswith("Approve"))
    approve.click().run()
    assert not at.exception
    with app_db.session() as s:
        assert masks.ground_truth(s, image_id) is not None


def test_review_previous_and_next_follow_the_click(app_as):
    at = app_as("expert", "pages/review.py")
    at.multiselect(key="rv_status").set_value(["to_review", "in_progress", "approved"]).run()
    ids = _select(at, "Image").options
    assert len(ids) >= 3
    for _ in range(len(ids)):                         # back to the first image
        if _button(at, "◀ Previous").disabled:
            break
        _button(at, "◀ Previous").click().run()
    first = at.session_state["rv_image"]
    assert _button(at, "◀ Previous").disabled and not _button(at, "Next ▶").disabled
    _button(at, "Next ▶").click().run()
    assert not at.exception
    second = at.session_state["rv_image"]
    assert second != first
    assert _select(at, "Image").value == second      # the image shown is the second one
    assert not _button(at, "◀ Previous").disabled     # drawn for the image now shown
    _button(at, "◀ Previous").click().run()
    assert at.session_state["rv_image"] == first and _button(at, "◀ Previous").disabled
    for _ in range(len(ids) - 1):
        _button(at, "Next ▶").click().run()
    assert _button(at, "Next ▶").disabled
    assert not _button(at, "◀ Previous").disabled


def _review_at(app_as, role, image_id):
    at = app_as(role, "pages/review.py")
    at.multiselect(key="rv_status").set_value(["to_review", "in_progress", "approved"]).run()
    at.session_state["rv_image"] = image_id
    return at.run()


def test_admin_assigns_blind_double_review_and_reviewers_do_not_see_each_other(app_as, app_db):
    from db import adjudication, masks, review, users

    with app_db.session() as s:
        a = users.create_user(s, "blind-a", "blind-a-password", role="operator").id
        b = users.create_user(s, "blind-b", "blind-b-password", role="operator").id
        image_id = int(review.image_counts(s, app_db.project_id)["image_id"].iloc[-2])
        head = masks.head_version(s, image_id).id
    at = app_as("admin", "pages/import_images.py")
    at.multiselect(key="dr_images").set_value([image_id])
    at.multiselect(key="dr_users").set_value([a, b])
    _button(at, "Assign for blind double review").click().run()
    assert not at.exception
    assert any("blind review" in m for m in _texts(at, "success")), _texts(at)
    with app_db.session() as s:
        got = {(r.user_id, r.blind, r.done) for r in masks.assignments(s, image_id=image_id)}
        assert {(a, True, False), (b, True, False)} <= got
        adjudication.record_decision(s, app_db.storage, image_id, head, 1, user_id=b, verdict="drop",
                              reason="blind-b thinks so")

    seen = _review_at(app_as, "expert", image_id)            # not blind: sees blind-b's drop
    assert "object 1 (drop)" in _select(seen, "Pick an object").options
    at = _review_at(app_as, "blind-a", image_id)
    assert not at.exception
    assert any("Blind review" in m for m in _texts(at, "info"))
    assert "object 1 (drop)" not in _select(at, "Pick an object").options
    assert any("0 kept, 0 dropped" in c.value for c in at.caption)

    _button(at, "Finish blind review").click().run()
    assert not at.exception
    with app_db.session() as s:
        mine = next(r for r in masks.assignments(s, image_id=image_id) if r.user_id == a)
        assert mine.done and mine.version_id is not None
        assert masks.head_version(s, image_id).id == head   # a blind version never becomes the head


def test_review_verdict_moves_the_picker_on(app_as):
    at = app_as("expert", "pages/review.py")
    at.multiselect(key="rv_status").set_value(["to_review", "in_progress", "approved"]).run()
    _select(at, "Pick an object").set_value(2).run()
    assert _select(at, "Pick an object").value == 2
    _button(at, "Unsure").click().run()
    assert not at.exception
    picker = _select(at, "Pick an object")
    options = picker.options
    assert "object 2 (unsure)" in options
    # On to the next object nobody judged yet ("-" when there is none).
    later = [o for o in options[options.index("object 2 (unsure)") + 1:] if "(" not in o]
    assert picker.format_func(picker.value) == (later[0] if later else "-")
    assert picker.value != 2


def test_review_threshold_preview_shows_new_count_before_saving(app_as, app_db):
    from db import masks

    at = app_as("expert", "pages/review.py")
    image_id = at.session_state["rv_image"]
    with app_db.session() as s:
        before = len(masks.versions(s, image_id))
    at.toggle(key="rv_preview").set_value(True).run()
    at.slider(key="rv_min_area").set_value(1000).run()
    labels = [m.label for m in at.metric]
    assert "Objects with these parameters" in labels
    assert any("would disappear" in c.value for c in at.caption)
    with app_db.session() as s:
        assert len(masks.versions(s, image_id)) == before     # nothing saved


def test_review_threshold_slider_starts_at_the_method_and_previews_changes(app_as, app_db):
    from core.prelabel import PrelabelParams, auto_threshold
    from db import masks
    from db.models import Image

    at = app_as("expert", "pages/review.py")
    image_id = at.session_state["rv_image"]
    with app_db.session() as s:
        before = len(masks.versions(s, image_id))
        rgb = app_db.storage.read_image(s.get(Image, image_id).path)
    at.toggle(key="rv_preview").set_value(True).run()
    slider = next(w for w in at.slider if w.label.startswith("Threshold (signal"))
    assert slider.value == round(auto_threshold(rgb, PrelabelParams()) * 2) / 2

    def preview():
        count = next(m for m in at.metric if m.label == "Objects with these parameters").value
        caption = next(c.value for c in at.caption if "would disappear" in c.value)
        return int(count), [int(w) for w in caption.split() if w.isdigit()]

    count_auto, _ = preview()
    slider.set_value(250.0).run()               # above almost every pixel: objects vanish
    assert not at.exception, at.exception
    count_high, (appear, disappear) = preview()
    assert count_high < count_auto and disappear > 0 and appear == 0
    next(w for w in at.slider if w.label.startswith("Threshold (signal")).set_value(1.0).run()
    count_low, _ = preview()
    assert count_low != count_high
    with app_db.session() as s:
        assert len(masks.versions(s, image_id)) == before     # nothing saved


def test_correct_injected_drawing_is_saved_as_new_version(app_as, app_db):
    from db import masks

    at = app_as("operator", "pages/correct.py")
    image_id = at.session_state["cx_image"]
    with app_db.session() as s:
        head = masks.head_version(s, image_id)
        n_versions, n_objects, head_id = len(masks.versions(s, image_id)), head.object_count, head.id
    labels = app_db.storage.read_labels(head.path)
    # an empty corner far from any object: a filled square there adds exactly one cell
    free = np.argwhere(np.add.reduceat(np.add.reduceat(labels == 0, np.arange(0, 600, 50), 0),
                                       np.arange(0, 800, 50), 1) == 2500)
    r, c = (free[0] * 50 + 10).tolist()
    # a 30 x 30 square, in image coordinates (x = column, y = row), as the editor sends it
    square = {"id": "sq", "tool": "add",
              "points": [[c, r], [c + 30, r], [c + 30, r + 30], [c, r + 30]]}
    at.session_state[at.session_state["cx_editor_key"]] = {
        "strokes": {"doc": at.session_state["cx_editor_doc"], "items": [square]}}
    at.run()
    after = next(m for m in at.metric if m.label == "After your edits")
    assert int(after.value) == n_objects + 1
    _button(at, "Save").click().run()
    assert not at.exception
    assert any("Saved version" in m for m in _texts(at, "success"))
    with app_db.session() as s:
        versions = masks.versions(s, image_id)
        new = masks.head_version(s, image_id)
    assert len(versions) == n_versions + 1
    assert new.parent_id == head_id and new.source == "manual" and new.object_count == n_objects + 1


def test_import_folder_reports_bad_file_and_auto_masks_the_rest(app_as, app_db):
    from core.io import write_image
    from core.synthetic import make_dataset
    from db import masks

    folder = app_db.settings.data_dir / "incoming" / "batch1"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (rgb, _) in enumerate(make_dataset(2, 99, shape=(300, 400))):
        write_image(folder / f"new_{i}.png", rgb)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    at = app_as("operator", "pages/import_images.py")
    at.text_input(key="import_folder").input(str(folder)).run()
    _button(at, "Import folder").click().run()
    assert not at.exception
    report = at.session_state["import_report"]
    assert len(report.imported) == 2 and [o.name for o in report.skipped] == ["broken.png"]
    assert at.dataframe  # the report table
    with app_db.session() as s:
        for o in report.imported:
            assert masks.head_version(s, o.image_id).source == "auto"
    # outside the allowed roots: refused with a sentence, not a stack trace
    at.text_input(key="import_folder").input("/etc").run()
    _button(at, "Import folder").click().run()
    assert any("outside the folders" in m for m in _texts(at))


def test_admin_split_panel_lists_locked_images(app_as, app_db):
    from db import projects, review

    with app_db.session() as s:
        table = review.image_counts(s, app_db.project_id)
        image_id = int(table["image_id"].iloc[-1])
        projects.lock_splits(s, [image_id])
        n_locked = int(review.image_counts(s, app_db.project_id)["split_locked"].sum())
    at = app_as("admin", "pages/import_images.py")
    assert not at.exception, at.exception
    assert any(f"{n_locked} locked" in c.value for c in at.caption), [c.value for c in at.caption]
    shown = [d.value for d in at.dataframe if "split" in d.value.columns]
    assert shown and image_id in shown[-1]["image_id"].tolist()


def test_import_uploads_one_good_one_corrupt(app_as, app_db):
    from core.io import write_image
    from core.synthetic import make_dataset
    from db import masks

    [(rgb, _)] = make_dataset(1, 123, shape=(200, 300))
    at = app_as("operator", "pages/import_images.py")
    at.file_uploader(key="import_files").set_value([
        ("uploaded_cells.png", write_image(None, rgb), "image/png"),
        ("uploaded_broken.png", b"\x89PNG\r\n\x1a\ntruncated", "image/png")]).run()
    _button(at, "Import uploads").click().run()
    assert not at.exception, at.exception
    report = at.session_state["import_report"]
    assert [o.name for o in report.imported] == ["uploaded_cells.png"]
    assert [(o.name, o.reason) for o in report.skipped] == [("uploaded_broken.png", "corrupt")]
    assert any("skipped 1 file" in w.value for w in at.warning)
    assert sorted(at.dataframe[0].value["file"]) == ["uploaded_broken.png", "uploaded_cells.png"]
    with app_db.session() as s:
        assert masks.head_version(s, report.imported[0].image_id).source == "auto"
