"""The CellTally schema: SQLAlchemy 2.0 typed models.

Every table lives here so that Alembic migrations and the functions in ``db`` share one
metadata. Timestamps are stored timezone-aware in UTC (:class:`UTCDateTime` gives them back
aware on SQLite too). Enumerated values are short strings, checked by the functions that write
them against the tuples below, so that adding a value needs no table rebuild on SQLite.

Mask versions are append-only: nothing in ``db`` updates or deletes a row of
:class:`MaskVersion`, :class:`Approval`, :class:`ObjectDecision`, :class:`AdjudicationDecision`
or :class:`AuditRecord`.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData,
                        String, Text, TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base", "utcnow", "UTCDateTime", "ROLES", "STAINS", "SPLITS", "REVIEW_STATUSES", "MASK_SOURCES",
    "VERDICTS", "JOB_KINDS", "JOB_STATUSES", "IMPORT_STATUSES", "OUTCOMES", "User", "Project",
    "ImportBatch", "Image", "MaskVersion", "Approval", "ObjectDecision", "ReviewAssignment",
    "AdjudicationItem", "AdjudicationDecision", "AuditRecord", "Job", "ModelRun", "RunItem",
    "ImageResult", "ObjectOutcome", "UserSession", "Device", "SignInAttempt", "SignInThrottle",
    "SESSION_END_REASONS", "ATTEMPT_OUTCOMES",
]

ROLES = ("operator", "expert", "viewer", "admin")
STAINS = ("yellow", "red", "green")
SPLITS = ("train", "test", "unassigned")
REVIEW_STATUSES = ("to_review", "in_progress", "approved")
MASK_SOURCES = ("import", "auto", "model", "manual", "adjudicated")
VERDICTS = ("keep", "drop", "unsure")
ADJUDICATION_KINDS = ("mask_object", "run_fp", "run_fn")
JOB_KINDS = ("train", "evaluate", "count")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
IMPORT_STATUSES = ("running", "done", "interrupted")
OUTCOMES = ("TP", "FP", "FN")
RUN_ITEM_ROLES = ("train", "validation", "test")
SESSION_END_REASONS = ("sign_out", "password", "disabled", "idle", "expired")
ATTEMPT_OUTCOMES = ("pending", "wrong", "right")

# Stable constraint names, so migrations can address them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone, so values come back naive there; they were written in UTC, so UTC is
    attached on the way out. Naive values on the way in are refused: their zone is unknowable.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"Timestamp {value!r} has no time zone; pass an aware UTC datetime.")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base holding the one metadata of the schema."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class User(Base):
    """A person who signs in; ``role`` is one of :data:`ROLES`."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = _created()


class UserSession(Base):
    """One sign-in of one browser: alive until ``ended_at`` is set (see :mod:`db.sessions`).

    ``id`` is the SHA-256 of the token the browser holds, so the table alone signs nobody in.
    """

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = _created()
    last_seen_at: Mapped[dt.datetime] = _created()
    ended_at: Mapped[dt.datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(16))


class Device(Base):
    """A browser that once signed in to an account (SHA-256 of its device cookie).

    It keeps an allowance of wrong passwords of its own (:func:`db.users.authenticate`).
    """

    __tablename__ = "user_devices"
    __table_args__ = (UniqueConstraint("user_id", "device_hash",
                                       name="uq_user_devices_user_device"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    device_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()
    last_used_at: Mapped[dt.datetime] = _created()


class SignInAttempt(Base):
    """A password check reserved before it runs; rows older than the window are deleted.

    ``bucket`` is the allowance it counts against: ``"account"`` for every client the account
    does not know, or the hash of a known device. ``outcome`` is one of :data:`ATTEMPT_OUTCOMES`.
    """

    __tablename__ = "sign_in_attempts"
    __table_args__ = (Index("ix_sign_in_attempts_window", "user_id", "bucket", "reserved_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    client: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(8), default="pending")
    reserved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SignInThrottle(Base):
    """Consecutive wrong passwords of one client on one account, and when it may try again."""

    __tablename__ = "sign_in_throttles"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[dt.datetime | None]


class Project(Base):
    """One stain, one model: the unit images, splits and runs belong to."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    stain: Mapped[str] = mapped_column(String(16))
    pixel_size_um: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = _created()
    # How microscopy files become RGB (core.io.ReadOptions): the channel to count on (shown in
    # the stain's colour), or an RGB composition such as "1,0,-"; a fixed display range.
    read_channel: Mapped[int | None] = mapped_column(Integer)
    read_composition: Mapped[str | None] = mapped_column(String(32))
    read_low: Mapped[float | None] = mapped_column(Float)
    read_high: Mapped[float | None] = mapped_column(Float)


class ImportBatch(Base):
    """One import: who, when, from where, and the report. Archiving hides its images.

    ``status`` is ``running`` while images are committed one by one, ``done`` when the report
    is complete, and ``interrupted`` when the import stopped early; running the same import
    again completes the batch. ``updated_at`` moves with every image, so a batch whose process
    died shows as interrupted too (:func:`db.projects.batch_state`).
    """

    __tablename__ = "import_batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    source: Mapped[str] = mapped_column(Text, default="")
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    archived_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()
    status: Mapped[str] = mapped_column(String(16), default="done", server_default="done")
    updated_at: Mapped[dt.datetime | None]


class Image(Base):
    """A stored image with its metadata, split, flags, review status and head mask version."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256", name="uq_images_project_sha256"),
        Index("ix_images_queue", "project_id", "archived", "review_status", "split", "id"),
        Index("ix_images_project_split", "project_id", "archived", "split", "id"),
        # The Review page's filter choices: a loose index scan per field (db.review).
        Index("ix_images_project_animal", "project_id", "animal"),
        Index("ix_images_project_region", "project_id", "region"),
        Index("ix_images_project_condition", "project_id", "condition"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)
    original_name: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    stain: Mapped[str | None] = mapped_column(String(16))
    animal: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(64))
    condition: Mapped[str | None] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(16), default="unassigned")
    split_locked: Mapped[bool] = mapped_column(Boolean, default=False)
    hard: Mapped[bool] = mapped_column(Boolean, default=False)
    hand_segmented: Mapped[bool] = mapped_column(Boolean, default=False)
    unlabelled: Mapped[bool] = mapped_column(Boolean, default=False)
    review_status: Mapped[str] = mapped_column(String(16), default="to_review")
    # Micrometres per pixel recorded in the file (OME or ImageJ; the side of a square pixel of
    # the same area); None falls back to the project's value.
    pixel_size_um: Mapped[float | None] = mapped_column(Float)
    # How the file was read (core.io.ImageInfo as a dict): format, depth, scaling rule,
    # channels, plane, pixel size, notes.
    read_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Copied from the import batch, so the queue's index can skip archived images.
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    # Circular with mask_versions.image_id: the constraint is added after both tables exist.
    head_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("mask_versions.id", use_alter=True, name="fk_images_head_version_id"))
    created_at: Mapped[dt.datetime] = _created()


class MaskVersion(Base):
    """One immutable mask of an image; ``parent_id`` chains the versions."""

    __tablename__ = "mask_versions"
    __table_args__ = (Index("ix_mask_versions_image", "image_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("mask_versions.id"))
    source: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    object_count: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = _created()
    # Provenance of a model's mask (source "model"): the run, its threshold and the sha256 of
    # the model file that predicted it, so exports say what made each count.
    run_id: Mapped[int | None] = mapped_column(ForeignKey("model_runs.id"))
    threshold: Mapped[float | None] = mapped_column(Float)
    model_sha256: Mapped[str | None] = mapped_column(String(64))


class Approval(Base):
    """A user's approval of one specific mask version as ground truth."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_image", "image_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("mask_versions.id"))
    approver_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()


class ObjectDecision(Base):
    """A user's verdict on one object of a mask version.

    ``cell_key`` groups decisions on "the same cell" across versions (objects overlapping with
    IoU >= 0.5 share it), so votes can be compared.
    """

    __tablename__ = "object_decisions"
    __table_args__ = (
        Index("ix_object_decisions_image", "image_id", "verdict"),
        Index("ix_object_decisions_version", "version_id", "label"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("mask_versions.id"))
    label: Mapped[int] = mapped_column(Integer)
    cell_key: Mapped[int] = mapped_column(Integer)
    centroid_row: Mapped[float] = mapped_column(Float)
    centroid_col: Mapped[float] = mapped_column(Float)
    bbox: Mapped[list[Any]] = mapped_column(JSON)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = _created()


class ReviewAssignment(Base):
    """An image given to a user to review; ``blind`` hides the others' work from them."""

    __tablename__ = "review_assignments"
    __table_args__ = (UniqueConstraint("image_id", "user_id", name="uq_review_assignments_image_user"),
                      Index("ix_review_assignments_user", "user_id", "done"))
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    blind: Mapped[bool] = mapped_column(Boolean, default=False)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("mask_versions.id"))
    assigned_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()


class AdjudicationItem(Base):
    """An object queued for an expert: a mask object or a run's FP/FN, with its geometry."""

    __tablename__ = "adjudication_items"
    __table_args__ = (Index("ix_adjudication_items_open", "project_id", "status", "priority"),
                      Index("ix_adjudication_items_image", "image_id", "status"))
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("mask_versions.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("model_runs.id"))
    label: Mapped[int | None] = mapped_column(Integer)
    centroid_row: Mapped[float] = mapped_column(Float)
    centroid_col: Mapped[float] = mapped_column(Float)
    bbox: Mapped[list[Any]] = mapped_column(JSON)
    geometry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    probability: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()


class AdjudicationDecision(Base):
    """An expert's final verdict on an item, with the adjudicated version it produced."""

    __tablename__ = "adjudication_decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("adjudication_items.id"), unique=True)
    expert_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(Text)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("mask_versions.id"))
    created_at: Mapped[dt.datetime] = _created()


class AuditRecord(Base):
    """Who did what to which row, with details; never updated."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity", "entity_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = _created()


class Job(Base):
    """A unit of work for a worker process: train, evaluate or count."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[dt.datetime | None]
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class ModelRun(Base):
    """A trained model: its run directory and what the database needs to know about it."""

    __tablename__ = "model_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    name: Mapped[str] = mapped_column(String(255), default="")
    run_dir: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    threshold: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = _created()


class RunItem(Base):
    """One (image, mask version) pair of a run's manifest, with its role."""

    __tablename__ = "run_items"
    __table_args__ = (Index("ix_run_items_run", "run_id", "role"),
                      Index("ix_run_items_image", "image_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("model_runs.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("mask_versions.id"))
    role: Mapped[str] = mapped_column(String(16))


class ImageResult(Base):
    """How a run did on one test image."""

    __tablename__ = "image_results"
    __table_args__ = (UniqueConstraint("run_id", "image_id", name="uq_image_results_run_image"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("model_runs.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("mask_versions.id"))
    tp: Mapped[int] = mapped_column(Integer)
    fp: Mapped[int] = mapped_column(Integer)
    fn: Mapped[int] = mapped_column(Integer)
    n_true: Mapped[int] = mapped_column(Integer)
    n_pred: Mapped[int] = mapped_column(Integer)
    iou: Mapped[float | None] = mapped_column(Float)
    heatmap_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class ObjectOutcome(Base):
    """One matched or unmatched object of an image result: TP, FP or FN."""

    __tablename__ = "object_outcomes"
    __table_args__ = (Index("ix_object_outcomes_result", "result_id", "outcome"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("image_results.id"))
    outcome: Mapped[str] = mapped_column(String(2))
    centroid_row: Mapped[float] = mapped_column(Float)
    centroid_col: Mapped[float] = mapped_column(Float)
    bbox: Mapped[list[Any]] = mapped_column(JSON)
    area: Mapped[int | None] = mapped_column(Integer)
    iou: Mapped[float | None] = mapped_column(Float)
    probability: Mapped[float | None] = mapped_column(Float)

