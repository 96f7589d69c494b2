"""Small helpers shared by the app tests."""


def signed_in(at, app_db, name: str) -> str:
    """Give ``at`` (an ``AppTest``) a new session of user ``name``, as a sign-in leaves it in
    session state, and the demo project; returns the session's token."""
    from db.sessions import start_session
    from db.users import get_user
    from pages.ui import TOKEN_KEY

    with app_db.session() as s:
        token = start_session(s, get_user(s, name))
    at.session_state[TOKEN_KEY] = token
    at.session_state["project_id"] = app_db.project_id
    return token


def image_with_cells(s, app_db):
    """The project's first image whose head version holds a cell: (image, head, its lowest label).

    The generator may leave an image of the shared database without cells.
    """
    import numpy as np
    from sqlalchemy import select

    from db import masks
    from db.models import Image

    for img in s.scalars(select(Image).where(Image.project_id == app_db.project_id,
                                             Image.head_version_id.is_not(None))
                         .order_by(Image.id)):
        head = masks.head_version(s, img.id)
        if head.object_count:
            labels = np.unique(app_db.storage.read_labels(head.path))
            return img, head, int(labels[labels > 0][0])
    raise AssertionError("no image of the shared database holds a cell")
