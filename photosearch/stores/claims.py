"""The shared work queue's claims and leases: how several indexers (processes, machines) split one library's work.

The queue is the catalog's ``pending`` photo rows. A worker claims a batch of them in one statement
(``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``): PostgreSQL hands each row to one
worker, however many ask at once; SQLite serialises writers, so the same statement is safe there too. A claim
lasts ``lease`` seconds and the worker renews it while it works (indexing/shared.py's heartbeat): when a worker
dies (kill -9, power cut, network loss) its claims simply expire and the rows are claimed again. Nothing is
half-written by then: the Index writes a photo's row pending, then its vector, then the row indexed, so a
claimer that died left at worst a vector that the next claimer upserts again under the same key.

Leases are named, expiring locks in the ``leases`` table: ``scan:<root id>`` lets one worker at a time compare a
root with the disk (the others embed meanwhile), and ``run:<worker>`` is held for as long as a worker runs. A
``run:`` lease that expired means its worker died; the next worker to start sweeps the vectors it may have left
without a row (indexing/shared.py).

Times are the catalog's clock (PostgreSQL's ``clock_timestamp()``), not each machine's: indexers on machines whose
clocks disagree still agree on when a claim expired.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Float, cast, delete, func, or_, select, update

from photosearch.stores.catalog import Catalog, FileState
from photosearch.stores.dialect import backend, insert_for
from photosearch.stores.schema import Lease, Photo, PhotoStatus

RUN_PREFIX = "run:"


def worker_name(configured: str | None) -> str:
    """Who claims: the configured name (or the host name), this process, and a random tag, so that two processes
    started with one name, or a restarted one, never mistake each other's claims for their own."""
    return f"{configured or socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Claimed:
    state: FileState
    root_id: int


class Claims:
    """One worker's side of the shared queue: its claims on pending rows, and its leases."""

    def __init__(self, catalog: Catalog, worker: str, lease: float) -> None:
        self._catalog = catalog
        self.worker = worker
        self.lease = lease

    def now(self) -> float:
        """The catalog's clock, in epoch seconds."""
        with self._catalog.session() as s:
            if backend(s) != "postgresql":
                return time.time()  # SQLite: every worker is on this machine
            return float(s.scalar(select(cast(func.extract("epoch", func.clock_timestamp()), Float))) or 0.0)

    # -- leases ----------------------------------------------------------------------------------------
    def take(self, name: str) -> bool:
        """Take the lease ``name`` if it is free, expired or already ours; whether this worker holds it now."""
        now = self.now()
        with self._catalog.session() as s, s.begin():
            stmt = insert_for(s, Lease).values(name=name, holder=self.worker, expires_at=now + self.lease)
            stmt = stmt.on_conflict_do_update(
                index_elements=[Lease.name],
                set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
                where=or_(Lease.expires_at < now, Lease.holder == self.worker),
            ).returning(Lease.holder)
            return s.execute(stmt).first() is not None

    def release(self, name: str) -> None:
        with self._catalog.session() as s, s.begin():
            s.execute(delete(Lease).where(Lease.name == name, Lease.holder == self.worker))

    def renew(self) -> None:
        """Push back the expiry of every lease and claim this worker holds (the heartbeat calls it)."""
        until = self.now() + self.lease
        with self._catalog.session() as s, s.begin():
            s.execute(update(Lease).where(Lease.holder == self.worker).values(expires_at=until))
            s.execute(
                update(Photo)
                .where(Photo.claimed_by == self.worker, Photo.status == PhotoStatus.PENDING)
                .values(claimed_until=until)
            )

    def dead_runs(self) -> list[str]:
        """The ``run:`` leases whose workers stopped renewing them: those workers died mid-run."""
        now = self.now()
        with self._catalog.session() as s:
            query = select(Lease.name).where(Lease.name.startswith(RUN_PREFIX), Lease.expires_at < now)
            return list(s.scalars(query))

    def running(self) -> list[str]:
        """The workers whose ``run:`` lease is alive (for `status`)."""
        now = self.now()
        with self._catalog.session() as s:
            query = select(Lease.holder).where(Lease.name.startswith(RUN_PREFIX), Lease.expires_at >= now)
            return sorted(s.scalars(query))

    def others_running(self) -> bool:
        """Whether another worker's ``run:`` lease is alive: it may be writing between the stores right now."""
        now = self.now()
        with self._catalog.session() as s:
            query = select(Lease.name).where(
                Lease.name.startswith(RUN_PREFIX), Lease.expires_at >= now, Lease.holder != self.worker
            )
            return s.scalars(query.limit(1)).first() is not None

    def expire(self, name: str) -> None:
        """End a lease of ours as if its worker had died (a run that failed midway): the next run checks the
        stores, as after a kill."""
        with self._catalog.session() as s, s.begin():
            s.execute(update(Lease).where(Lease.name == name, Lease.holder == self.worker).values(expires_at=0.0))

    def forget(self, names: Sequence[str]) -> None:
        """Drop expired leases (a dead worker's ``run:`` lease, once its leftovers are swept)."""
        now = self.now()
        with self._catalog.session() as s, s.begin():
            s.execute(delete(Lease).where(Lease.name.in_(list(names)), Lease.expires_at < now))

    # -- claims ----------------------------------------------------------------------------------------
    def claim(self, root_ids: Sequence[int], limit: int, again: bool = False) -> list[Claimed]:
        """Claim up to ``limit`` pending rows of these roots that nobody else holds (or whose claim expired);
        ``again``: this worker's own claims too, those a batch that failed midway (a server fault) could not give
        back (never while a batch of its claims is in flight: it would get them twice)."""
        now = self.now()
        free = or_(Photo.claimed_until.is_(None), Photo.claimed_until < now)
        if again:
            free = or_(free, Photo.claimed_by == self.worker)
        pick = (
            select(Photo.id)
            .where(Photo.status == PhotoStatus.PENDING, Photo.root_id.in_(list(root_ids)), free)
            .order_by(Photo.content_hash, Photo.id)  # byte-identical photos in one batch: one model call
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL: rows another worker is claiming are passed over
        )
        stmt = (
            update(Photo)
            .where(Photo.id.in_(pick.scalar_subquery()))
            .values(claimed_by=self.worker, claimed_until=now + self.lease)
            .returning(
                Photo.id,
                Photo.path,
                Photo.size,
                Photo.mtime_ns,
                Photo.content_hash,
                Photo.status,
                Photo.folder,
                Photo.root_id,
            )
        )
        with self._catalog.session() as s, s.begin():
            rows = s.execute(stmt).all()
        return sorted((Claimed(FileState(*row[:7]), row[7]) for row in rows), key=lambda c: c.state.id)

    def unclaim(self, ids: Sequence[int]) -> None:
        """Give back claims (done, or not to be done by this worker after all)."""
        with self._catalog.session() as s, s.begin():
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                s.execute(
                    update(Photo)
                    .where(Photo.id.in_(part), Photo.claimed_by == self.worker)
                    .values(claimed_by=None, claimed_until=None)
                )

    def pending(self, root_ids: Sequence[int]) -> int:
        """How many rows of these roots are queued, claimed or not."""
        with self._catalog.session() as s:
            query = select(func.count()).where(Photo.status == PhotoStatus.PENDING, Photo.root_id.in_(root_ids))
            return s.scalar(query) or 0
