"""``python -m db``: migrate, create projects and users, back up and restore, collect orphaned
files, import, split and export.

Every command reads :class:`db.settings.Settings` from the environment, migrates the database
first (so a fresh install works with any command), and exits non-zero with one sentence on bad
input. ``backup``, ``restore`` and ``gc`` do not migrate: they take the database as it is, and
refuse (status 2) one that is missing or unreachable. Passwords come from
``CELLTALLY_PASSWORD`` or a prompt, never from the command line.
"""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.engine import make_engine, upgrade
from db.models import ROLES, SPLITS, STAINS, Image, Project
from db.settings import Settings

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m db``."""
    parser = argparse.ArgumentParser(prog="python -m db", description="CellTally database tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="migrate the database to the current schema")
    project = sub.add_parser("project", help="manage projects")
    psub = project.add_subparsers(dest="action", required=True)
    create = psub.add_parser("create", help="create a project")
    create.add_argument("name")
    create.add_argument("--stain", required=True, choices=STAINS)
    create.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                        help="pixel size in micrometres, for images whose files do not record "
                             "it (densities per mm²)")
    create.add_argument("--channel", default=None, metavar="N",
                        help="count on channel N (from 0) of multi-channel files, shown in the "
                             "stain's colour")
    create.add_argument("--composition", default=None, metavar="R,G,B",
                        help="or compose red, green and blue from channels, e.g. 1,0,- "
                             "(- leaves a colour dark)")
    create.add_argument("--display-range", default=None, metavar="LO:HI",
                        help="raw values shown as black and white (default: the bit depth each "
                             "file declares)")
    user = sub.add_parser("user", help="manage users")
    user.add_argument("action", choices=["add", "passwd", "disable"])
    user.add_argument("name")
    user.add_argument("--role", choices=ROLES, default="operator")
    backup = sub.add_parser(
        "backup", help="write the whole installation (database and files) into one archive",
        description="One tar archive (mode 0600) with every table's rows, every image, mask, "
                    "heatmap and run directory the database names, and a manifest with their "
                    "checksums. The live database may keep working meanwhile.")
    backup.add_argument("path", type=Path)
    restore = sub.add_parser(
        "restore", help="restore an archive into an empty installation",
        description="Restores into CELLTALLY_DB_URL and CELLTALLY_DATA_DIR, which must be empty "
                    "(SQLite or PostgreSQL, whatever the archive came from); checks every "
                    "checksum first, then upgrades the database to this version's schema.")
    restore.add_argument("path", type=Path)
    gc = sub.add_parser(
        "gc", help="list (or delete) stored files that nothing in the database names",
        description="Lists files below images/, masks/, heatmaps/ and runs/ that no row names, "
                    "with their total size; changes nothing unless --delete is given.")
    gc.add_argument("--delete", action="store_true",
                    help="remove them (never files changed in the last 24 hours)")
    _add_import(sub)
    _add_split(sub)
    _add_export(sub)
    return parser


def _add_import(sub) -> None:
    imp = sub.add_parser("import", help="import images (and masks) into a project")
    imp.add_argument("path", type=Path, help="folder, image file, FNC data set, VIA JSON or COCO "
                                             "JSON (any folder you can read)")
    imp.add_argument("--project", required=True)
    imp.add_argument("--masks", type=Path, default=None,
                     help="folder of masks matched to the images by name: label or binary "
                          "TIFF/PNG, Cellpose _seg.npy, ImageJ .roi/.zip, QuPath .geojson")
    imp.add_argument("--format", choices=["folder", "fnc", "via", "coco"], default=None,
                     help="guessed from the path when left out")
    imp.add_argument("--approved", action="store_true", default=None,
                     help="mark imported masks as approved ground truth (default for FNC)")
    imp.add_argument("--no-prelabel", action="store_true",
                     help="do not make automatic masks for images that arrive without one")
    imp.add_argument("--z", default=None, metavar="K|max",
                     help="for Z-stacks and multi-page TIFFs: the plane to use (from 0), or max "
                          "for the maximum projection")
    imp.add_argument("--user", default=None, help="record the import under this user name")
    imp.add_argument("--categories", default=None, metavar="NAME[,NAME]",
                     help="COCO: import the annotations of these categories only (needed when "
                          "a file has several)")


def _add_split(sub) -> None:
    split = sub.add_parser(
        "split", help="assign images to the train and test splits",
        description="Send a seeded random share of a project's unassigned images to test and the "
                    "rest to train (--test-share), or move named images by hand (--set). Images "
                    "locked because a run was scored on them are never moved from here.")
    split.add_argument("names", nargs="*", metavar="NAME", help="image file names (with --set)")
    split.add_argument("--project", required=True)
    how = split.add_mutually_exclusive_group(required=True)
    how.add_argument("--test-share", type=float, default=None, metavar="FRACTION",
                     help="share of the unassigned images that goes to test, e.g. 0.3")
    how.add_argument("--set", dest="set_split", choices=SPLITS, default=None,
                     help="move the named images to this split")
    split.add_argument("--seed", type=int, default=0, help="seed of the random share (default 0)")
    split.add_argument("--user", default=None,
                       help="record the move in the audit log under this admin's name")


def _add_export(sub) -> None:
    exp = sub.add_parser("export", help="export counts, cells (label images, ROIs, GeoJSON), "
                                        "COCO or VIA")
    exp.add_argument("kind", choices=["counts", "masks", "labels", "imagej", "geojson", "coco",
                                      "via"],
                     help="what to write: a counts CSV; a zip of label PNGs (masks), label "
                          "TIFFs (labels), ImageJ ROI sets (imagej) or QuPath GeoJSON "
                          "(geojson), one file per image; COCO JSON or VIA JSON")
    exp.add_argument("--project", required=True)
    exp.add_argument("--out", required=True, type=Path)
    exp.add_argument("--split", choices=["train", "test", "unassigned"], default=None)
    exp.add_argument("--status", choices=["to_review", "in_progress", "approved"], default=None)
    exp.add_argument("--ground-truth", action="store_true",
                     help="export each image's latest approved mask instead of its current one")
    exp.add_argument("--rle", action="store_true",
                     help="COCO: write every cell as RLE (default: polygons where exact)")


def _password(prompt: str) -> str:
    env = os.environ.get("CELLTALLY_PASSWORD")
    if env:
        return env
    first = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != first:
        raise ValueError("The two passwords differ; nothing was changed.")
    return first


def _user_command(args, engine) -> str:
    from db import users

    with Session(engine) as s, s.begin():
        if args.action == "add":
            users.create_user(s, args.name, _password(f"Password for {args.name}: "), role=args.role)
            return f"User {args.name} ({args.role}) created."
        found = users.get_user(s, args.name)
        if found is None:
            raise ValueError(f"There is no user {args.name!r}.")
        if args.action == "passwd":
            users.set_password(s, found, _password(f"New password for {args.name}: "))
            return f"Password of {args.name} changed."
        users.disable_user(s, found)
        return f"User {args.name} disabled."


def _project_command(args, engine) -> str:
    """``project create``: the project, with how its microscopy files are read."""
    from core.io import ReadOptions
    from db.projects import create_project, describe_read_options

    read = ReadOptions.from_text(channel=args.channel, display_range=args.display_range,
                                 composition=args.composition)
    with Session(engine) as s, s.begin():
        project = create_project(s, args.name, stain=args.stain, pixel_size_um=args.pixel_size,
                                 read=read)
        how = describe_read_options(project)
    return f"Project {args.name} ({args.stain}) created; files are read {how}."


def _split_command(args, engine) -> str:
    """``split``: a random share (unassigned images only) or a move by hand; what happened."""
    from db.projects import get_project

    with Session(engine) as s, s.begin():
        project = get_project(s, args.project)
        actor_id = _split_actor(s, args.user)
        if args.test_share is None:
            return _hand_split(s, project, args.set_split, args.names, actor_id)
        if args.names:
            raise ValueError("--test-share splits every unassigned image, so leave out the image "
                             "names; to move named images use --set SPLIT NAME...")
        return _random_split(s, project, args.test_share, args.seed, actor_id)


def _split_actor(session: Session, name: str | None) -> int | None:
    """The id of the admin a split is recorded under; None when no name was given."""
    if not name:
        return None
    from db.users import get_user

    found = get_user(session, name)
    if found is None:
        raise ValueError(f"There is no user {name!r} to record the split under; add one with "
                         f"`python -m db user add {name} --role admin`, or leave out --user.")
    if found.role != "admin":
        raise PermissionError(f"Moving images between splits is for admins, and {name} is "
                              f"{found.role}; name an admin with --user, or leave out --user.")
    return found.id


def _random_split(session: Session, project: Project, share: float, seed: int,
                  actor_id: int | None) -> str:
    from db.projects import random_splits

    held = list(session.scalars(select(Image).where(
        Image.project_id == project.id, Image.split == "unassigned", Image.split_locked.is_(True),
        Image.archived.is_(False)).order_by(Image.id)))
    n = random_splits(session, project.id, test_share=share, seed=seed, actor_id=actor_id)
    if n["test"] + n["train"] == 0:
        lines = [f"Project {project.name} has no unlocked unassigned images to split; move "
                 f"images by hand with --set SPLIT NAME..."]
    else:
        lines = [f"Project {project.name}: {n['test']} unassigned image(s) went to test and "
                 f"{n['train']} to train (test share {share}, seed {seed}); images already in "
                 f"train or test kept their split."]
    return "\n".join(lines + ([_locked_note(held)] if held else []))


def _hand_split(session: Session, project: Project, split: str, names: list[str],
                actor_id: int | None) -> str:
    from db.projects import move_splits

    if not names:
        raise ValueError(f"Name the images to move, e.g. `python -m db split --project "
                         f"{project.name} --set {split} cells_1.png cells_2.png`.")
    images = _images_named(session, project, names)
    held = [im for im in images if im.split_locked and im.split != split]
    free = [im for im in images if not (im.split_locked and im.split != split)]
    moved = move_splits(session, [im.id for im in free], split, actor_id=actor_id)
    lines = [f"Moved {moved} image(s) of project {project.name} to {split}"
             + (f"; {len(free) - moved} already there." if len(free) > moved else ".")]
    return "\n".join(lines + ([_locked_note(held)] if held else []))


def _images_named(session: Session, project: Project, names: list[str]) -> list[Image]:
    """The project's images with these original names; a ValueError naming any it lacks."""
    wanted = list(dict.fromkeys(names))
    images = list(session.scalars(select(Image).where(
        Image.project_id == project.id, Image.original_name.in_(wanted)).order_by(Image.id)))
    missing = [n for n in wanted if n not in {im.original_name for im in images}]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"Project {project.name} has no image called {', '.join(missing[:5])}"
                         f"{more}; nothing was moved. Use the file names the import report lists.")
    return images


def _locked_note(images: list[Image]) -> str:
    """Which locked images were left where they are, and why."""
    shown = ", ".join(f"{im.original_name} ({im.split})" for im in images[:10])
    more = f" and {len(images) - 10} more" if len(images) > 10 else ""
    return (f"Not moved: {len(images)} locked image(s), {shown}{more}. A run was scored on them, "
            f"so moving them would change what its scores mean; an admin can still move them in "
            f"the app, giving a reason that is logged.")


def _backup_command(args, settings: Settings) -> str:
    from db.backup import backup
    from db.gc import format_size

    done = backup(settings, args.path)
    lines = [f"Backed up to {done.path}: {sum(done.rows.values())} rows of {len(done.rows)} "
             f"tables and {done.files} files ({format_size(done.size)}), database revision "
             f"{done.revision} ({done.engine})."]
    if done.outside_runs:
        lines.append("Not in the archive, because they lie outside the data dir (copy them "
                     "yourself if they are yours): " + ", ".join(done.outside_runs))
    return "\n".join(lines)


def _restore_command(args, settings: Settings) -> str:
    from db.backup import restore

    done = restore(settings, args.path)
    lines = [f"Restored {sum(done.rows.values())} rows and {done.files} files from "
             f"{args.path} (revision {done.revision}); the database is now at revision "
             f"{done.upgraded_to}."]
    if done.missing_runs:
        lines.append("These run directories outside the data dir are missing here; copy them "
                     "to the same paths: " + ", ".join(done.missing_runs))
    return "\n".join(lines)


def _gc_command(args, settings: Settings) -> str:
    from db.backup import open_database
    from db.gc import MIN_AGE_S, delete_orphans, file_references, find_orphans, format_size
    from db.storage import Storage

    engine, _revision = open_database(settings.db_url)
    storage = Storage(settings.data_dir)
    try:
        with engine.connect() as conn:
            orphans = find_orphans(file_references(conn, storage), storage)
        if args.delete and orphans:
            # Read the references again just before deleting: an import may have named one.
            with engine.connect() as conn:
                orphans = find_orphans(file_references(conn, storage), storage)
            removed = delete_orphans(orphans, storage)
    finally:
        engine.dispose()
    total = sum(o.size for o in orphans)
    lines = [f"{o.key}\t{format_size(o.size)}" for o in orphans]
    lines.append(f"{len(orphans)} unreferenced file(s) and run folder(s), {format_size(total)}.")
    if not args.delete:
        lines.append("Nothing was changed; `python -m db gc --delete` removes those older than "
                     "24 hours." if orphans else "Nothing to clean up.")
    elif orphans:
        kept = len(orphans) - len(removed)
        lines.append(f"Deleted {len(removed)} ({format_size(sum(o.size for o in removed))})"
                     + (f"; kept {kept} changed in the last {MIN_AGE_S // 3600} hours." if kept
                        else "."))
    return "\n".join(lines)


def _run(args, settings: Settings) -> str | int:
    """Run a command: a message to print, or the exit status of an import or export."""
    # These read (or fill) a database as it is: migrating first would change what they read,
    # and would create an empty database where a URL was mistyped.
    if args.command == "backup":
        return _backup_command(args, settings)
    if args.command == "restore":
        return _restore_command(args, settings)
    if args.command == "gc":
        return _gc_command(args, settings)
    engine = make_engine(settings)
    rev = upgrade(engine)
    if args.command == "upgrade":
        return f"Database at revision {rev}."
    if args.command == "project":
        return _project_command(args, engine)
    if args.command == "user":
        return _user_command(args, engine)
    if args.command == "split":
        return _split_command(args, engine)
    if args.command == "import":
        from db import importing

        return int(importing.run_import_cli(args, settings))
    from db import exporting

    return int(exporting.run_export_cli(args, settings))


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = settings or Settings.from_env()
        message = _run(args, settings)
    except (ValueError, PermissionError) as err:
        log.error("%s", err)
        return 2
    if isinstance(message, int):
        return message
    if message:
        sys.stdout.write(message.rstrip("\n") + "\n")
    return 0
