"""Change your own password."""
import streamlit as st

from core.plaintext import escape_markdown as md
from db import users
from pages import ui

who = ui.require()
st.title("Account")
st.write(f"Signed in as **{md(who.name)}** ({who.role}).")
if "account_flash" in st.session_state:
    st.success(st.session_state.pop("account_flash"))

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
                me = users.get_user(s, who.name)
                users.change_password(s, me, old, new, client=ui.client_id())
                ui.sign_in(s, me)  # every session ended with the old password; this tab starts anew
            st.session_state["account_flash"] = ("Password changed. Every other sign-in of yours "
                                                 "has ended; use the new password next time.")
            st.rerun()
        except (users.AuthenticationError, ValueError) as err:
            st.error(str(err))
