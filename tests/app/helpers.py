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
