"""Users and projects: create users, reset passwords, disable and enable accounts, clear sign-in
limits; create projects and set their pixel size (admins only)."""
import streamlit as st

from db import projects, sessions, users
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
    table = []
    for u in users.list_users(s):
        wrong, until = users.sign_in_limits(s, u)
        table.append({"name": u.name, "role": u.role, "disabled": u.disabled,
                      "open sessions": len(sessions.live_sessions(s, u.id)),
                      "wrong passwords (last minute)": wrong, "sign-in delayed until": until,
                      "created": u.created_at})
st.subheader("Users")
st.dataframe(table, hide_index=True, width="stretch")
names = [row["name"] for row in table]

create, reset, able, limits, project, sizes = st.tabs(["Create a user", "Reset a password",
                                                      "Disable or enable", "Sign-in limits",
                                                      "Create a project", "Pixel size"])
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
                    target = users.get_user(s, name)
                    users.set_password(s, target, pw, actor_id=who.id)
                    if target.id == who.id:  # their own: this tab starts a new session
                        ui.sign_in(s, target)
                done(f"The password of {name} was reset and their sessions ended; tell them the "
                     "new one.")
            except ValueError as err:
                st.error(str(err))
with able:
    name = st.selectbox("User", names, key="able_user")
    c1, c2 = st.columns(2)
    if c1.button("Disable account", disabled=name == who.name,
                 help="You cannot disable your own account."):
        with ui.session() as s:
            users.disable_user(s, users.get_user(s, name), actor_id=who.id)
        done(f"{name} can no longer sign in and their sessions ended; their work stays "
             "attributed to them.")
    if c2.button("Enable account"):
        with ui.session() as s:
            users.enable_user(s, users.get_user(s, name), actor_id=who.id)
        done(f"{name} can sign in again.")
with limits:
    st.caption(f"After {users.MAX_FAILED} wrong passwords in a minute an account refuses browsers "
               "it does not know, and each wrong password makes its browser wait longer "
               "(2, 4, 8 ... seconds, at most 15 minutes). Browsers that signed in to the account "
               "before keep their own allowance.")
    name = st.selectbox("User", names, key="limits_user")
    if st.button("Clear sign-in limits", help="Forget the recent wrong passwords and every delay."):
        with ui.session() as s:
            users.clear_sign_in_limits(s, users.get_user(s, name), actor_id=who.id)
        done(f"{name} can try to sign in again at once, from any browser.")
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
with sizes:
    st.caption("The size of a pixel, for the images whose files do not record one: densities "
               "(cells per mm²) need it. Images whose files record their own keep theirs.")
    with ui.session() as s:
        known = {p.id: (p.name, p.pixel_size_um) for p in projects.list_projects(s)}
    if not known:
        st.info("There is no project yet.")
    else:
        chosen = st.selectbox("Project", list(known), key="size_project",
                              format_func=lambda i: known[i][0],
                              index=list(known).index(ui.project_id())
                              if ui.project_id() in known else 0)
        name, size = known[chosen]
        st.markdown(f"Now: **{f'{size:g} µm per pixel' if size else 'unknown'}**.")
        with st.form("pixel_size", clear_on_submit=True):
            new = st.number_input("Pixel size (µm per pixel)", min_value=0.0, value=size or 0.0,
                                  format="%.4f", help="0 clears it (unknown).")
            if st.form_submit_button("Set pixel size"):
                try:
                    with ui.session() as s:
                        projects.set_pixel_size(s, chosen, new or None, actor=ui.db_user(s, who))
                    done(f"{name}: {f'{new:g} µm per pixel' if new else 'pixel size cleared'}.")
                except ValueError as err:
                    st.error(str(err))
