"""Sign in. With no users at all (a real installation's first start), create the admin account."""
import streamlit as st

from pages import ui

st.title("CellTally")
ui.write_cookies()  # a sign-out's cookie deletion is made here

from db import users  # noqa: E402

if "signin_flash" in st.session_state:
    st.info(st.session_state.pop("signin_flash"))

with ui.session() as s:
    first_start = not users.list_users(s)

if first_start:
    st.subheader("Create the admin account")
    st.write("There are no accounts yet. The first one is the administrator; it creates the others.")
    with st.form("first_admin"):
        name = st.text_input("Admin name")
        pw = st.text_input("Password", type="password")
        pw2 = st.text_input("Repeat the password", type="password")
        if st.form_submit_button("Create the admin account", type="primary"):
            if pw != pw2:
                st.error("The two passwords differ; type the same password twice.")
            else:
                try:
                    with ui.session() as s:
                        if users.list_users(s):
                            raise ValueError("An account was created meanwhile; sign in instead.")
                        admin = users.create_user(s, name, pw, role="admin")
                        ui.sign_in(s, admin)
                    st.rerun()
                except ValueError as err:
                    st.error(str(err))
    st.stop()

st.subheader("Sign in")
with st.form("signin"):
    name = st.text_input("Name")
    pw = st.text_input("Password", type="password")
    go = st.form_submit_button("Sign in", type="primary")
if go:
    try:
        # The attempt is recorded in a transaction of its own, so a failure needs no commit here.
        with ui.session() as s:
            ui.sign_in(s, users.authenticate(s, name.strip(), pw, client=ui.client_id()))
        st.rerun()
    except users.AuthenticationError as err:
        st.error(str(err))

if ui.settings().demo:
    st.divider()
    st.caption("Demo accounts (demo mode only): name / password")
    from training.demo_project import DEMO_USERS

    st.table([{"role": role, "name": n, "password": p} for n, p, role in DEMO_USERS])
