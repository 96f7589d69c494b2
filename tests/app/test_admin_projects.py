"""Projects on the Admin page (issue 13): a project just created is the one the sidebar shows,
and an admin sets a project's pixel size (``db.projects.set_pixel_size``)."""
from __future__ import annotations

import pytest

NAME = "loop test project"


def _project(app_db, name):
    from db import projects

    with app_db.session() as s:
        p = projects.get_project(s, name)
        return p.id, p.pixel_size_um


def _submit(at, form_button: str) -> None:
    next(b for b in at.button if b.label == form_button).click().run()
    assert not at.exception, at.exception


def test_a_new_project_is_selected_in_the_sidebar_and_gets_a_pixel_size(app_as, app_db):
    at = app_as("admin", "pages/admin.py")
    assert at.selectbox(key="ui_project").value == app_db.project_id
    next(t for t in at.text_input if t.label == "Project name").input(NAME)
    _submit(at, "Create project")
    new, size = _project(app_db, NAME)
    assert any("it is now selected" in m.value for m in at.success)
    assert at.selectbox(key="ui_project").value == new and size is None
    assert at.session_state["project_id"] == new

    at.selectbox(key="size_project").set_value(new)
    next(n for n in at.number_input if n.label == "Pixel size (µm per pixel)").set_value(0.65)
    _submit(at, "Set pixel size")
    assert _project(app_db, NAME)[1] == pytest.approx(0.65)
    assert any(f"{NAME}: 0.65 µm per pixel" in m.value for m in at.success)

    # Picking a project in the sidebar still switches to it.
    at.selectbox(key="ui_project").set_value(app_db.project_id).run()
    assert at.session_state["project_id"] == app_db.project_id
    assert at.selectbox(key="ui_project").value == app_db.project_id


def test_only_admins_set_a_positive_pixel_size(app_db):
    from sqlalchemy import select

    from db import projects, users
    from db.models import AuditRecord

    with app_db.session() as s:
        p = projects.create_project(s, "loop pixel project", stain="red")
        admin, operator = users.get_user(s, "admin"), users.get_user(s, "operator")
        with pytest.raises(PermissionError, match="admin"):
            projects.set_pixel_size(s, p.id, 0.5, actor=operator)
        for bad in (0, -1.0, float("nan"), "wide"):
            with pytest.raises(ValueError, match="positive number"):
                projects.set_pixel_size(s, p.id, bad, actor=admin)
        assert projects.set_pixel_size(s, p.id, 0.325, actor=admin).pixel_size_um == 0.325
        assert projects.set_pixel_size(s, p.id, None, actor=admin).pixel_size_um is None
        changes = s.scalars(select(AuditRecord).where(AuditRecord.action == "project.pixel_size",
                                                      AuditRecord.entity_id == p.id)).all()
    assert [(c.detail["from"], c.detail["to"]) for c in changes] == [(None, 0.325), (0.325, None)]
