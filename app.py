"""CellTally: the router. It registers the pages a signed-in user's role may open; nothing else.

Each page checks the role again itself (``pages.ui.require``): the navigation only hides what a
role cannot use. The database is migrated once per server process (``pages.ui.engine``); in
demo mode the demo project is built in the background on the first start, with a note on every
page until it is ready. ``.streamlit/config.toml`` keeps Streamlit's own chrome out: no Deploy
button, no list of the ``pages/`` folder (which holds helpers too) before ``st.navigation`` runs,
and no file watcher over the data dir.
"""
from pathlib import Path

import streamlit as st

from pages import ui

HERE = Path(__file__).resolve().parent
ALL, EDIT = ui.ROLES, ui.EDITORS

# (file, title, icon, roles, section). Part-2 pages are listed once their file exists.
PAGES = [
    ("pages/review.py", "Review", ":material/fact_check:", EDIT, "Label"),
    ("pages/correct.py", "Correct", ":material/draw:", EDIT, "Label"),
    ("pages/import_images.py", "Import", ":material/upload:", EDIT, "Label"),
    ("pages/adjudicate.py", "Adjudicate", ":material/gavel:", ("expert", "admin"), "Label"),
    ("pages/train.py", "Train", ":material/model_training:", EDIT, "Model"),
    ("pages/predictions.py", "Predictions", ":material/visibility:", ALL, "Model"),
    ("pages/dashboard.py", "Dashboard", ":material/monitoring:", ALL, "Model"),
    ("pages/count.py", "Count", ":material/calculate:", EDIT, "Model"),
    ("pages/export.py", "Export", ":material/download:", ALL, "Model"),
    ("pages/account.py", "Account", ":material/person:", ALL, "Account"),
    ("pages/admin.py", "Admin", ":material/admin_panel_settings:", ("admin",), "Account"),
]

st.set_page_config(page_title="CellTally", page_icon=":material/biotech:", layout="wide")
ui.engine()
if ui.settings().demo and (not ui.demo_build().finished or ui.demo_build().error):
    ui.demo_progress()
who = ui.current_user()
# config.toml hides the sidebar navigation, so Streamlit's first run (which lists the whole pages/
# folder, helpers included, before this script gets to st.navigation) shows nothing; this
# script's own navigation is shown.
st.set_option("client.showSidebarNavigation", True)

if who is None:
    nav = st.navigation([st.Page("pages/signin.py", title="Sign in", icon=":material/login:")])
else:
    sections: dict[str, list] = {}
    for path, title, icon, roles, section in PAGES:
        if who.role in roles and (HERE / path).is_file():
            sections.setdefault(section, []).append(st.Page(path, title=title, icon=icon))
    nav = st.navigation(sections)
nav.run()
