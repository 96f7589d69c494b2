"""Change your own password."""
import streamlit as st

from db import users
from pages import ui

who = ui.require()
st.title("Account")
st.write(f"Signed in as **{who.name}** ({who.role}).")

with st.form("change_password", clear_on_submit=True):
    old = st.text_input("Current password", type="password")
    new = st.text_input("New password", type="password", help=f"At least {users.MIN_PASSWORD} characters.")
    new2 = st.text_input("Repeat the new password", type="password")
    go = st.form_submit_button("Change password", type="primary")
if go:
    if new != new2:
        st.error("The two new passwords differ; type the same new password twice.")
    else:
        try:
            with ui.session() as s:
                users.change_password(s, users.get_user(s, who.name), old, new)
            st.success("Password changed. Use the new one next time you sign in.")
        except (users.AuthenticationError, ValueError) as err:
            st.error(str(err))
