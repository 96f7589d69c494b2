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
        Folder imports may only read below these roots (the data dir is always one).
    upload_limit_mb : int
        Largest uploaded file accepted, in megabytes.
    workers : str
        ``"local"`` (the app starts a worker process when it queues a job) or ``"remote"``
        (workers run elsewhere against the same database; nothing is started here).
    """

    data_dir: Path
    db_url: str
    demo: bool = False
    import_roots: tuple[Path, ...] = field(default_factory=tuple)
    upload_limit_mb: int = 200
    workers: str = "local"

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
        if workers == "remote" and db_url.startswith("sqlite"):
            # Remote workers reach the database over a network file system, where SQLite's
            # locking is not safe: two hosts claiming jobs could corrupt the file.
            raise ValueError(
                "CELLTALLY_WORKERS=remote needs a database server: SQLite is not safe for "
                "workers on other machines. Point CELLTALLY_DB_URL at PostgreSQL (e.g. "
                "postgresql+psycopg://user@host/celltally) or use CELLTALLY_WORKERS=local.")
        return cls(
            data_dir=data_dir,
            db_url=_absolute_sqlite(db_url, base),
            demo=demo,
            import_roots=tuple(dict.fromkeys(roots)),
            upload_limit_mb=int(env.get("CELLTALLY_UPLOAD_LIMIT_MB", "200")),
            workers=workers,
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
        }


def _absolute_sqlite(url: str, base: Path) -> str:
    """Make a relative SQLite path absolute, so every process finds the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rel = url[len(prefix):]
        if rel and rel != ":memory:":
            return prefix + str((base / rel).resolve())
    return url
