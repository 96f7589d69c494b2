"""Users and projects: create users, reset passwords, disable and enable accounts (admins only)."""
import streamlit as st

from db import projects, users
from pages import ui

who = ui.require("admin")
st.title("Admin")


def done(message: str) -> None:
    """Show ``message`` after a rerun, so the tables above already include the change."""
    st.session_state["admin_flash"] = message
    st.rerun()


if "admin_flash" in st.session_state:
    st.success(st.session_state.pop("admin_flash"))

with ui.session() as s:
    table = [{"name": u.name, "role": u.role, "disabled": u.disabled,
              "locked until": u.locked_until, "created": u.created_at} for u in users.list_users(s)]
st.subheader("Users")
st.dataframe(table, hide_index=True, width="stretch")
names = [row["name"] for row in table]

create, reset, able, project = st.tabs(["Create a user", "Reset a password", "Disable or enable",
                                       "Create a project"])
with create:
    with st.form("create_user", clear_on_submit=True):
        name = st.text_input("Name")
        role = st.selectbox("Role", ui.ROLES)
        pw = st.text_input("Initial password", type="password",
                           help=f"At least {users.MIN_PASSWORD} characters; they can change it.")
        if st.form_submit_button("Create user", type="primary"):
            try:
                with ui.session() as s:
                    users.create_user(s, name, pw, role=role, actor_id=who.id)
                done(f"Created {name.strip()} ({role}).")
            except ValueError as err:
                st.error(str(err))
with reset:
    with st.form("reset_password", clear_on_submit=True):
        name = st.selectbox("User", names, key="reset_user")
        pw = st.text_input("New password", type="password")
        if st.form_submit_button("Reset password"):
            try:
                with ui.session() as s:
                    users.set_password(s, users.get_user(s, name), pw, actor_id=who.id)
                done(f"The password of {name} was reset; tell them the new one.")
            except ValueError as err:
                st.error(str(err))
with able:
    name = st.selectbox("User", names, key="able_user")
    c1, c2 = st.columns(2)
    if c1.button("Disable account", disabled=name == who.name,
                 help="You cannot disable your own account."):
        with ui.session() as s:
            users.disable_user(s, users.get_user(s, name), actor_id=who.id)
        done(f"{name} can no longer sign in; their work stays attributed to them.")
    if c2.button("Enable account"):
        with ui.session() as s:
            users.enable_user(s, users.get_user(s, name), actor_id=who.id)
        done(f"{name} can sign in again.")
with project:
    with st.form("create_project", clear_on_submit=True):
        pname = st.text_input("Project name")
        stain = st.selectbox("Stain", ("yellow", "red", "green"), help="One project, one stain, one model.")
        pixel = st.number_input("Pixel size (µm per pixel, 0 if unknown)", min_value=0.0, value=0.0,
                                format="%.4f")
        if st.form_submit_button("Create project"):
            try:
                with ui.session() as s:
                    p = projects.create_project(s, pname, stain=stain, pixel_size_um=pixel or None,
                                                actor_id=who.id)
                    st.session_state["project_id"] = p.id
                done(f"Created project {pname.strip()} ({stain}); it is now selected.")
            except ValueError as err:
                st.error(str(err))
