"""Parallel password guessing, for the lockout tests: each process makes its own engine, waits at a
start gate, then tries some wrong passwords and the right one, as fast as it can.

The process counts, with a hasher of its own, every verification against the account's real hash:
an independent route to the number of wrong passwords checked, beside the audit records.
"""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from datetime import datetime, timezone

# Cheap Argon2 for tests; the stored hash carries its own parameters, so verifying uses these.
CHEAP = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


@dataclass(frozen=True)
class Guesses:
    """What one process saw: wrong passwords checked against the real hash, sign-ins that got
    in, and any error other than AuthenticationError."""

    verified_wrong: int
    got_in: int
    errors: tuple[str, ...]


def guess(url: str, name: str, right: str, n_wrong: int, gate, results, at: str) -> None:
    """Try ``n_wrong`` wrong passwords and then ``right``; put a :class:`Guesses` on ``results``.

    Every attempt happens at the instant ``at`` (ISO time): "all at once", however long a
    loaded machine takes to run twenty processes (else a 2 s delay could run out between one
    process's guesses, and its right password would be checked, as it should be then).
    """
    import datetime as dt

    from argon2 import PasswordHasher
    from sqlalchemy.orm import Session

    import db.users
    from db.engine import make_engine

    real: list[str] = []
    wrong = [0]

    class Counting(PasswordHasher):
        def verify(self, hash, password):  # noqa: A002 (argon2's own parameter name)
            if hash in real and password != right:
                wrong[0] += 1
            return super().verify(hash, password)

    db.users._HASHER = Counting(**CHEAP)
    engine = make_engine(url)
    with Session(engine) as s:
        real.append(db.users.get_user(s, name).password_hash)
    got_in, errors = 0, []
    now = dt.datetime.fromisoformat(at)
    gate.wait()
    for password in [f"wrong guess {k}" for k in range(n_wrong)] + [right]:
        try:
            with Session(engine) as s, s.begin():
                db.users.authenticate(s, name, password, clock=lambda: now)
                got_in += 1
        except db.users.AuthenticationError:
            pass
        except Exception as err:  # anything else is a finding: report it, don't hide it
            errors.append(f"{type(err).__name__}: {err}")
    engine.dispose()
    results.put(Guesses(wrong[0], got_in, tuple(errors)))


def race(url: str, name: str, right: str, *, processes: int = 20, n_wrong: int = 4,
         timeout: float = 120) -> list[Guesses]:
    """Run ``processes`` spawned guessers at once against one account; their reports."""
    ctx = mp.get_context("spawn")
    gate, results = ctx.Barrier(processes), ctx.Queue()
    at = datetime.now(timezone.utc).isoformat()
    procs = [ctx.Process(target=guess, args=(url, name, right, n_wrong, gate, results, at))
             for _ in range(processes)]
    for p in procs:
        p.start()
    reports = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    return reports
