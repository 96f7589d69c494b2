"""The audit log: who did what to which row, kept forever and never updated."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AuditRecord

__all__ = ["record", "audit_log"]


def record(session: Session, *, user_id: int | None, action: str, entity: str,
           entity_id: int | None = None, detail: dict[str, Any] | None = None) -> AuditRecord:
    """Add one audit record (flushed, not committed).

    Parameters
    ----------
    session : Session
    user_id : int or None
        Who acted; None for the system (a worker, a migration).
    action : str
        A short verb phrase such as ``"split.move"`` or ``"adjudication.decide"``.
    entity, entity_id : str, int or None
        The table and row acted on.
    detail : dict, optional
        JSON-serialisable facts (old and new values, reasons). Never put a password here.
    """
    rec = AuditRecord(user_id=user_id, action=action, entity=entity, entity_id=entity_id,
                      detail=dict(detail or {}))
    session.add(rec)
    session.flush()
    return rec


def audit_log(session: Session, *, entity: str | None = None, entity_id: int | None = None,
              action: str | None = None, limit: int = 200) -> list[AuditRecord]:
    """The newest audit records first, optionally for one entity, row or action."""
    query = select(AuditRecord)
    if entity is not None:
        query = query.where(AuditRecord.entity == entity)
    if entity_id is not None:
        query = query.where(AuditRecord.entity_id == entity_id)
    if action is not None:
        query = query.where(AuditRecord.action == action)
    query = query.order_by(AuditRecord.created_at.desc(), AuditRecord.id.desc()).limit(limit)
    return list(session.scalars(query))
