"""The one place that reads the environment.

Everything else receives a :class:`Settings` (or the one field it needs). Paths are made
absolute here, so a worker process started from another directory opens the same database
and data directory as the app that started it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Settings"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Runtime settings of one CellTally installation.

    Attributes
    ----------
    data_dir : Path
        Where images, masks, heatmaps and run directories live (absolute).
    db_url : str
        SQLAlchemy URL; SQLite file under ``data_dir`` by default.
    demo : bool
        Demo mode: a separate database and data dir under ``data/demo/``, demo accounts listed.
    import_roots : tuple of Path
        Folders the app (a browser) may import from; the data dir is always one
        (``CELLTALLY_IMPORT_ROOTS``, separated by ``os.pathsep``). The command line reads any
        folder the person running it can read.
    upload_limit_mb : int
        Largest uploaded file accepted, in megabytes.
    max_upload_pixels : int
        Largest uploaded image accepted, in pixels per plane, checked from the file's header
        before decoding (``CELLTALLY_MAX_UPLOAD_PIXELS``, default 40 megapixels). Folder and
        command-line imports keep ``core.io.MAX_PIXELS`` (100 megapixels).
    workers : str
        ``"local"`` (the app starts a worker process when it queues a job) or ``"remote"``
        (workers run elsewhere against the same database; nothing is started here).
    session_idle_hours : float
        A sign-in ends after this long without a page run (``CELLTALLY_SESSION_IDLE_HOURS``).
    session_max_days : float
        A sign-in ends this long after it began, however busy (``CELLTALLY_SESSION_MAX_DAYS``).
    """

    data_dir: Path
    db_url: str
    demo: bool = False
    import_roots: tuple[Path, ...] = field(default_factory=tuple)
    upload_limit_mb: int = 200
    workers: str = "local"
    session_idle_hours: float = 8.0
    session_max_days: float = 7.0
    max_upload_pixels: int = 40_000_000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, base: Path | None = None) -> "Settings":
        """Build settings from ``CELLTALLY_*`` environment variables.

        >>> s = Settings.from_env({"CELLTALLY_DATA_DIR": "/tmp/ct"})
        >>> s.db_url
        'sqlite:////tmp/ct/celltally.db'
        >>> Settings.from_env({"CELLTALLY_DEMO": "1"}, base=Path("/srv")).data_dir
        PosixPath('/srv/data/demo')
        """
        env = dict(os.environ if env is None else env)
        base = Path(base or Path.cwd()).resolve()
        demo = env.get("CELLTALLY_DEMO", "0").strip().lower() in _TRUE
        default_dir = base / "data" / ("demo" if demo else "")
        data_dir = Path(env.get("CELLTALLY_DATA_DIR") or default_dir)
        if not data_dir.is_absolute():
            data_dir = base / data_dir
        data_dir = data_dir.resolve()
        db_url = env.get("CELLTALLY_DB_URL") or f"sqlite:///{data_dir / 'celltally.db'}"
        roots = [data_dir]
        for part in env.get("CELLTALLY_IMPORT_ROOTS", "").split(os.pathsep):
            if part.strip():
                p = Path(part.strip())
                roots.append((p if p.is_absolute() else base / p).resolve())
        workers = env.get("CELLTALLY_WORKERS", "local").strip().lower()
        if workers not in ("local", "remote"):
            raise ValueError(
                f"CELLTALLY_WORKERS is {workers!r}; set it to 'local' or 'remote'.")
        return cls(
            data_dir=data_dir,
            db_url=_absolute_sqlite(db_url, base),
            demo=demo,
            import_roots=tuple(dict.fromkeys(roots)),
            upload_limit_mb=int(env.get("CELLTALLY_UPLOAD_LIMIT_MB", "200")),
            workers=workers,
            session_idle_hours=_positive(env, "CELLTALLY_SESSION_IDLE_HOURS", 8.0),
            session_max_days=_positive(env, "CELLTALLY_SESSION_MAX_DAYS", 7.0),
            max_upload_pixels=_positive_int(env, "CELLTALLY_MAX_UPLOAD_PIXELS", 40_000_000),
        )

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed (a thin wrapper over ``dataclasses.replace``)."""
        return replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {
            "CELLTALLY_DATA_DIR": str(self.data_dir),
            "CELLTALLY_DB_URL": self.db_url,
            "CELLTALLY_DEMO": "1" if self.demo else "0",
            "CELLTALLY_IMPORT_ROOTS": os.pathsep.join(str(p) for p in self.import_roots),
            "CELLTALLY_UPLOAD_LIMIT_MB": str(self.upload_limit_mb),
            "CELLTALLY_WORKERS": self.workers,
            "CELLTALLY_SESSION_IDLE_HOURS": str(self.session_idle_hours),
            "CELLTALLY_SESSION_MAX_DAYS": str(self.session_max_days),
            "CELLTALLY_MAX_UPLOAD_PIXELS": str(self.max_upload_pixels),
        }


def _positive(env: dict[str, str], name: str, default: float) -> float:
    """A positive number from the environment, or ValueError naming the variable.

    >>> _positive({"X": "0.5"}, "X", 8.0), _positive({}, "X", 8.0)
    (0.5, 8.0)
    """
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} is {raw!r}; set it to a positive number (or leave it unset for "
                         f"{default:g}).")
    return value


def _positive_int(env: dict[str, str], key: str, default: int) -> int:
    """A positive whole number from the environment, or a sentence saying what to set.

    >>> _positive_int({"N": "2_000"}, "N", 5), _positive_int({}, "N", 5)
    (2000, 5)
    """
    text = env.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{key} is {text!r}; set it to a positive whole number, e.g. {default}.")
    return value


def _absolute_sqlite(url: str, base: Path) -> str:
    """Make a relative SQLite path absolute, so every process finds the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rel = url[len(prefix):]
        if rel and rel != ":memory:":
            return prefix + str((base / rel).resolve())
    return url
