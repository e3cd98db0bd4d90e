"""The production feedback store: what the router answered, and whether the answer was accepted.

The sidecar (``serving/``) records every routed request with :meth:`FeedbackStore.record_request`
and every label it receives on ``POST /v1/feedback`` with :meth:`FeedbackStore.add_feedback`;
``cascade-router retrain`` reads the labelled requests back with :meth:`FeedbackStore.labelled`.

The store is library code over SQLAlchemy Core, so the same class works on a local SQLite file
(``sqlite:///cascade-feedback.db``: WAL journal, a busy timeout, so several threads *and*
processes can write at once without losing a row) and on PostgreSQL
(``postgresql+psycopg://user@host/db``, psycopg 3 from the ``postgres`` extra) when the sidecar
is scaled out behind a load balancer.  One instance is safe to share between threads: every
call takes its own connection from the engine's pool and runs in its own transaction.

Tables:

``requests``
    one row per request id (``record_request`` is idempotent: a second call with the same id
    leaves the first row as it was).
``feedback``
    at most one row per request id: a later label for the same request replaces the earlier one
    (its ``created_at`` is the time of the latest label).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from router.errors import ConfigurationError, UnknownRequestError

if TYPE_CHECKING:
    from router.settings import RouterSettings

__all__ = [
    "LABELLED_COLUMNS",
    "REQUEST_COLUMNS",
    "FeedbackRecord",
    "FeedbackStore",
    "RequestRecord",
]


@dataclass(frozen=True)
class RequestRecord:
    """One routed request, as the sidecar answered it."""

    request_id: str
    step: str
    input_text: str  # router.backends.input_text(messages)
    messages: list[dict[str, Any]]  # stored as JSON
    target: str
    router_version: str | None
    tier: str  # the tier whose answer was returned
    path: str  # RouteResult.path
    p_accept: float  # pre-answer P(first tier accepted)
    probabilities: dict[str, float]
    answers: dict[str, str]  # every tier's answer produced for this request, tier -> text
    answer: str  # the returned answer
    cost_usd: float
    latency_s: float
    created_at: float = field(default_factory=time.time)
    #: the validator's verdict on each tier's answer, where the request constrained its shape
    #: (tools, a JSON response format): tier -> valid; empty when nothing was constrained
    validity: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackRecord:
    """The label of one request: was the returned answer accepted?"""

    request_id: str
    accepted: bool
    score: float | None
    source: str | None
    created_at: float


#: Columns of the request part of :meth:`FeedbackStore.labelled` (JSON fields decoded).
REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id",
    "step",
    "input_text",
    "messages",
    "target",
    "router_version",
    "tier",
    "path",
    "p_accept",
    "probabilities",
    "answers",
    "answer",
    "cost_usd",
    "latency_s",
    "created_at",
    "validity",
)
#: Every column of :meth:`FeedbackStore.labelled`.
LABELLED_COLUMNS: tuple[str, ...] = (*REQUEST_COLUMNS, "accepted", "score", "source", "labelled_at")

_JSON_FIELDS = ("messages", "probabilities", "answers", "validity")
_FLOAT_FIELDS = ("p_accept", "cost_usd", "latency_s", "created_at", "labelled_at", "score")
#: ids per ``IN (...)`` list: SQLite builds before 3.32 allow 999 parameters per statement
_IDS_PER_QUERY = 900

_metadata = sa.MetaData()
_requests = sa.Table(
    "requests",
    _metadata,
    sa.Column("request_id", sa.String(200), primary_key=True),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("input_text", sa.Text, nullable=False),
    sa.Column("messages", sa.Text, nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("router_version", sa.String(200), nullable=True),
    sa.Column("tier", sa.String(200), nullable=False),
    sa.Column("path", sa.String(200), nullable=False),
    sa.Column("p_accept", sa.Float, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),
    sa.Column("answers", sa.Text, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    # added after the first release: stores created before it gain it on open (NULL: {})
    sa.Column("validity", sa.Text, nullable=True),
)
#: Columns added to ``requests`` since stores were first created, with their SQL type.
_ADDED_COLUMNS = {"validity": "TEXT"}
_feedback = sa.Table(
    "feedback",
    _metadata,
    sa.Column(
        "request_id",
        sa.String(200),
        sa.ForeignKey("requests.request_id"),
        primary_key=True,
    ),
    sa.Column("accepted", sa.Boolean, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("source", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)

_SQLITE_BUSY_TIMEOUT_S = 30.0
_RETRIES = 8
#: PostgreSQL advisory lock held while the schema is created (any fixed key of this project)
_SCHEMA_LOCK_KEY = 7243901


def _finite(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
    return number


class FeedbackStore:
    """Requests and their acceptance labels in one SQL database (SQLite or PostgreSQL).

    Args:
        url: a SQLAlchemy URL.  ``sqlite:///path.db`` gets WAL mode and a busy timeout so that
            concurrent writers wait for each other instead of failing.  A plain
            ``postgresql://`` URL uses psycopg 3 (``postgresql+psycopg://``): SQLAlchemy 2.0
            would otherwise pick psycopg2, which the ``postgres`` extra does not install.  The
            password may come from libpq's ``PGPASSWORD`` instead of the URL.  The tables are
            created when missing.

    Raises:
        ConfigurationError: the URL cannot be parsed or the database cannot be opened.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigurationError(f"invalid feedback store URL {url!r}: {exc}") from exc
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self._is_sqlite:
            kwargs["connect_args"] = {
                "timeout": _SQLITE_BUSY_TIMEOUT_S,
                "check_same_thread": False,
            }
        try:
            self._engine: Engine = sa.create_engine(parsed, **kwargs)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigurationError(f"cannot open feedback store {url!r}: {exc}") from exc
        if self._is_sqlite:
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        try:
            self._retrying(self._create_schema)
        except OperationalError as exc:
            self._engine.dispose()
            raise ConfigurationError(f"cannot open feedback store {url!r}: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> FeedbackStore:
        """The store at ``settings.feedback_url`` (default ``sqlite:///cascade-feedback.db``)."""
        return cls(settings.feedback_url)

    # ----------------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------------

    def record_request(self, record: RequestRecord) -> None:
        """Store one routed request; a second call with the same ``request_id`` is a no-op."""
        self.record_requests([record])

    def record_requests(self, records: Iterable[RequestRecord]) -> int:
        """Store many routed requests in one transaction (an import, a replay); ids already
        stored are left as they were.  Returns how many records were given."""
        rows = [_request_row(record) for record in records]
        if not rows:
            return 0
        statement = self._insert(_requests)
        if statement is None:  # a dialect without upsert: one at a time
            for row in rows:
                self._record_one_without_upsert(row)
            return len(rows)
        self._write(statement.on_conflict_do_nothing(index_elements=["request_id"]), rows)
        return len(rows)

    def _record_one_without_upsert(self, row: dict[str, Any]) -> None:
        if self.get_request(row["request_id"]) is not None:
            return
        # another writer may store the same id between our check and our insert
        with contextlib.suppress(IntegrityError):
            self._write(_requests.insert().values(**row))

    def add_feedback(
        self,
        request_id: str,
        accepted: bool,
        score: float | None = None,
        source: str | None = None,
    ) -> FeedbackRecord:
        """Label a recorded request; a later label for the same request replaces the earlier one.

        Raises:
            UnknownRequestError: no request with this id was recorded.
            ConfigurationError: ``score`` is not a finite number.
        """
        record = FeedbackRecord(
            request_id=str(request_id),
            accepted=bool(accepted),
            score=None if score is None else _finite(score, "score"),
            source=None if source is None else str(source),
            created_at=time.time(),
        )
        values = {
            "accepted": record.accepted,
            "score": record.score,
            "source": record.source,
            "created_at": record.created_at,
        }

        with self._engine.connect() as conn:
            known = conn.execute(
                sa.select(_requests.c.request_id).where(_requests.c.request_id == record.request_id)
            ).first()
        if known is None:
            raise UnknownRequestError(record.request_id)
        statement = self._insert(_feedback)
        if statement is not None:
            self._write(
                statement.values(request_id=record.request_id, **values).on_conflict_do_update(
                    index_elements=["request_id"], set_=values
                )
            )
            return record
        for attempt in range(_RETRIES):  # a dialect without upsert: update, else insert
            try:
                with self._engine.begin() as conn:
                    updated = conn.execute(
                        _feedback.update()
                        .where(_feedback.c.request_id == record.request_id)
                        .values(**values)
                    )
                    if updated.rowcount == 0:
                        conn.execute(
                            _feedback.insert().values(request_id=record.request_id, **values)
                        )
                break
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        return record

    def add_feedback_batch(self, labels: Iterable[FeedbackRecord]) -> int:
        """Store many labels in one transaction (an offline grading job, a replay); a label
        replaces an earlier one of the same request.  Returns how many were given.

        Raises:
            UnknownRequestError: a label names a request that was never recorded (nothing of
                the batch is stored).
        """
        rows: list[dict[str, Any]] = [
            {
                "request_id": str(label.request_id),
                "accepted": bool(label.accepted),
                "score": None if label.score is None else _finite(label.score, "score"),
                "source": None if label.source is None else str(label.source),
                "created_at": float(label.created_at),
            }
            for label in labels
        ]
        if not rows:
            return 0
        statement = self._insert(_feedback)
        if statement is None:
            for row in rows:
                self.add_feedback(row["request_id"], row["accepted"], row["score"], row["source"])
            return len(rows)
        excluded = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=["request_id"],
            set_={c: excluded[c] for c in ("accepted", "score", "source", "created_at")},
        )
        try:
            self._write(upsert, rows)
        except IntegrityError as exc:  # the foreign key: a request that was never recorded
            ids = {row["request_id"] for row in rows}
            with self._engine.connect() as conn:
                known = {
                    r[0]
                    for chunk in _chunks(sorted(ids))
                    for r in conn.execute(
                        sa.select(_requests.c.request_id).where(_requests.c.request_id.in_(chunk))
                    )
                }
            raise UnknownRequestError(sorted(ids - known)[0] if ids - known else "?") from exc
        return len(rows)

    # ----------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------

    def get_request(self, request_id: str) -> RequestRecord | None:
        """The recorded request with this id, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(_requests).where(_requests.c.request_id == str(request_id))
            ).first()
        if row is None:
            return None
        data = dict(row._mapping)
        for name in _JSON_FIELDS:
            data[name] = _decoded(data[name])
        return RequestRecord(**data)

    def get_feedback(self, request_id: str) -> FeedbackRecord | None:
        """The current label of a request, or None when it has none."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(_feedback).where(_feedback.c.request_id == str(request_id))
            ).first()
        if row is None:
            return None
        data = dict(row._mapping)
        return FeedbackRecord(
            request_id=data["request_id"],
            accepted=bool(data["accepted"]),
            score=data["score"],
            source=data["source"],
            created_at=float(data["created_at"]),
        )

    def labelled(self, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        """One row per labelled request: the request columns plus the label.

        ``since`` / ``until`` bound the time of the label (``labelled_at``, Unix seconds):
        ``since <= labelled_at < until``.  Rows are ordered by ``labelled_at``; the JSON
        columns (``messages``, ``probabilities``, ``answers``) are decoded.  The whole window
        is in memory at once: a large log is read with :meth:`iter_labelled`.
        """
        parts = list(self.iter_labelled(since, until))
        if not parts:
            return _labelled_frame([], LABELLED_COLUMNS)
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def iter_labelled(
        self,
        since: float | None = None,
        until: float | None = None,
        columns: Sequence[str] = LABELLED_COLUMNS,
        batch_size: int = 20_000,
    ) -> Iterator[pd.DataFrame]:
        """The rows of :meth:`labelled` (only ``columns``), ``batch_size`` at a time.

        Streamed from the database (a server-side cursor on PostgreSQL): memory holds one
        batch, whatever the size of the window.  Ask only for the columns you need: the texts
        (``input_text``, ``messages``, ``answers``, ``answer``) are most of a row.
        """
        query = self._labelled_query(columns)
        if since is not None:
            query = query.where(_feedback.c.created_at >= float(since))
        if until is not None:
            query = query.where(_feedback.c.created_at < float(until))
        query = query.order_by(_feedback.c.created_at, _requests.c.request_id)
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(
                query
            )
            for partition in result.partitions():
                yield _labelled_frame(partition, columns)

    def labelled_rows(
        self, request_ids: Iterable[str], columns: Sequence[str] = LABELLED_COLUMNS
    ) -> pd.DataFrame:
        """The labelled requests with these ids (only ``columns``; ids without a label are left
        out), ordered by ``labelled_at``: the second pass after choosing rows from a light
        :meth:`iter_labelled` read."""
        wanted = list(columns)
        selected = [*wanted, *(c for c in ("labelled_at", "request_id") if c not in wanted)]
        query = self._labelled_query(selected)
        parts: list[pd.DataFrame] = []
        with self._engine.connect() as conn:
            for chunk in _chunks(sorted({str(i) for i in request_ids})):
                rows = conn.execute(query.where(_requests.c.request_id.in_(chunk))).all()
                parts.append(_labelled_frame(rows, selected))
        if not parts:
            return _labelled_frame([], wanted)
        frame = pd.concat(parts, ignore_index=True)
        frame = frame.sort_values(["labelled_at", "request_id"], kind="stable")
        return frame[wanted].reset_index(drop=True)

    def _labelled_query(self, columns: Sequence[str]) -> Any:
        unknown = [c for c in columns if c not in LABELLED_COLUMNS]
        if unknown:
            raise ConfigurationError(f"unknown feedback column(s) {unknown}; see LABELLED_COLUMNS")
        label_columns: dict[str, Any] = {
            "accepted": _feedback.c.accepted,
            "score": _feedback.c.score,
            "source": _feedback.c.source,
            "labelled_at": _feedback.c.created_at.label("labelled_at"),
        }
        selected = [
            label_columns[name] if name in label_columns else _requests.c[name] for name in columns
        ]
        return sa.select(*selected).join_from(
            _requests, _feedback, _requests.c.request_id == _feedback.c.request_id
        )

    def counts(self) -> dict[str, int]:
        """``{"requests": n recorded, "labelled": n with a label}``."""
        with self._engine.connect() as conn:
            requests = conn.execute(sa.select(sa.func.count()).select_from(_requests)).scalar_one()
            labelled = conn.execute(sa.select(sa.func.count()).select_from(_feedback)).scalar_one()
        return {"requests": int(requests), "labelled": int(labelled)}

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeedbackStore({self._engine.url.render_as_string(hide_password=True)!r})"

    # ----------------------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``ON CONFLICT`` on SQLite and PostgreSQL, else None."""
        name = self._engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table)
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        return None

    def _create_schema(self) -> None:
        """Create the missing tables.  Replicas that open a fresh PostgreSQL database at the
        same moment would race between "does the table exist?" and ``CREATE TABLE`` (a unique
        violation on ``pg_type``, or "relation already exists"): the check and the creation run
        one process at a time, under a transaction-scoped advisory lock on PostgreSQL and under
        SQLite's write lock (``BEGIN IMMEDIATE``; Python's driver sends no ``BEGIN`` before
        DDL, so each statement would otherwise commit on its own)."""
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                )
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            _metadata.create_all(conn)
            self._add_missing_columns(conn)

    def _add_missing_columns(self, conn: Any) -> None:
        """Add the columns of :data:`_ADDED_COLUMNS` to a ``requests`` table created before
        them (under the schema lock)."""
        present = {c["name"] for c in sa.inspect(conn).get_columns("requests")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in present:
                conn.execute(sa.text(f"ALTER TABLE requests ADD COLUMN {name} {kind}"))

    def _write(self, statement: Any, rows: list[dict[str, Any]] | None = None) -> None:
        """Execute one write statement (for every row of ``rows``: one batch) in its own
        transaction, retried while SQLite is busy."""

        def run() -> None:
            with self._engine.begin() as conn:
                conn.execute(statement, rows) if rows is not None else conn.execute(statement)

        self._retrying(run)

    def _retrying(self, action: Any) -> Any:
        """Run ``action``, retrying a few times when SQLite reports the database as locked."""
        for attempt in range(_RETRIES):
            try:
                return action()
            except OperationalError as exc:
                locked = "locked" in str(exc).lower() or "busy" in str(exc).lower()
                if not locked or attempt == _RETRIES - 1:
                    raise
                time.sleep(0.05 * (2**attempt))
        return None


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _IDS_PER_QUERY):
        yield ids[start : start + _IDS_PER_QUERY]


def _labelled_frame(rows: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    """Database rows as a frame: JSON columns decoded, numbers typed."""
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(columns))
    for name in columns:
        if name in _JSON_FIELDS:
            frame[name] = [_decoded(v) for v in frame[name]]
        elif name in _FLOAT_FIELDS:
            frame[name] = frame[name].astype(float)
        elif name == "accepted":
            frame[name] = frame[name].astype(bool)
    return frame


def _request_row(record: RequestRecord) -> dict[str, Any]:
    """The ``requests`` row of a record (JSON fields encoded)."""
    row: dict[str, Any] = {
        "request_id": str(record.request_id),
        "step": str(record.step),
        "input_text": str(record.input_text),
        "messages": json.dumps(list(record.messages)),
        "target": str(record.target),
        "router_version": None if record.router_version is None else str(record.router_version),
        "tier": str(record.tier),
        "path": str(record.path),
        "p_accept": float(record.p_accept),
        "probabilities": json.dumps({str(k): float(v) for k, v in record.probabilities.items()}),
        "answers": json.dumps({str(k): str(v) for k, v in record.answers.items()}),
        "answer": str(record.answer),
        "cost_usd": float(record.cost_usd),
        "latency_s": float(record.latency_s),
        "created_at": float(record.created_at),
        "validity": json.dumps({str(k): bool(v) for k, v in record.validity.items()}),
    }
    if not row["request_id"]:
        raise ConfigurationError("request_id must not be empty")
    return row


def _decoded(value: str | None) -> Any:
    """A JSON column's value (NULL, in a column added later: an empty mapping)."""
    return {} if value is None else json.loads(value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
