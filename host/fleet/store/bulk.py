"""Bulk INSERT ... ON CONFLICT DO NOTHING of a batch of rows, for ingest.

Ingest writes a batch with one statement per table (``insert_rows``): each column's values are bound as
SQLAlchemy binds them, without its per-row parameter building, on SQLite in a multi-row INSERT, on
PostgreSQL by a binary COPY into a temporary table and one INSERT ... SELECT from it (measured on 1,000
benchmark reports a batch: SQLite 108 -> 67 us a report, PostgreSQL's client 287 -> 33 us of CPU). A
report's ``payload`` is the JSON the device sent, when ingest passes it (``add_reports(..., payloads)``):
the report was validated from it, so it reads back as the same model, and encoding each report again
cost about as much as building the rest of its row. A report whose ``sent_at`` was bounded, or an oddly large payload
(the wire model bounds each field, not the whitespace between them), is encoded as before.

Written by hand because SQLAlchemy's executemany builds each row's parameters in Python (about as much
CPU as the rest of a report's ingest), and psycopg parses a long multi-row INSERT's placeholders in
Python; a COPY has none. The rows stored are those ``conn.execute(insert(table).on_conflict_do_nothing())``
stores (``tests/host/fleet/test_ingest_rows.py`` compares them, table by table, on both databases).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

# parameters in one INSERT on SQLite, which binds at most 32,766 (since 3.32)
MAX_PARAMS = 30_000
FIRST_NORMAL_OID = 16384  # PostgreSQL: OIDs below this are built in (the same in every database)


@dataclass(frozen=True)
class _RowsInsert:
    """The SQL by which ``insert_rows`` writes rows of some columns of a table on one dialect."""

    head: str = ""  # SQLite: INSERT INTO t (columns) VALUES
    row: str = ""  # SQLite: (?, ?, ...)
    tail: str = ""  # SQLite: ON CONFLICT (key) DO NOTHING [RETURNING key]
    staging: str = ""  # PostgreSQL: CREATE TEMP TABLE IF NOT EXISTS ...
    copy: str = ""  # PostgreSQL: COPY staging (columns) FROM STDIN
    oids: tuple[int, ...] = ()  # PostgreSQL, binary COPY: the columns' types
    move: str = ""  # PostgreSQL: staging -> the table, ON CONFLICT (key) DO NOTHING [RETURNING key]


@dataclass
class BoundRows:
    """Rows of a table as the driver binds them (``bind_rows``), for ``insert_rows``: built before a
    transaction, so that SQLite's one writer at a time holds the database only to write them."""

    table: sa.Table
    columns: tuple[str, ...]
    values: list[Any]  # each row's values in the order of ``columns``

    def only(self, keys: set[Any]) -> BoundRows:
        """The rows whose (single-column) primary key is in ``keys``."""
        if not self.values:
            return self
        i = self.columns.index(self.table.primary_key.columns.values()[0].name)
        return BoundRows(self.table, self.columns, [v for v in self.values if v[i] in keys])


_Key = tuple[str, str, str, tuple[str, ...]]
_processors: dict[_Key, tuple[tuple[int, Callable[[Any], Any]], ...]] = {}
_inserts: dict[tuple[_Key, bool], _RowsInsert] = {}
_NOTHING = object()


def sqlite_datetime(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy's SQLite ``DATETIME`` stores it (its storage format): its own fields, any
    time zone left out, always with microseconds ("2026-01-02 03:04:05.000000")."""
    if value is None:
        return None
    v = value
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


def bind_rows(dialect: Dialect, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> BoundRows:
    """``rows`` (dicts with the columns of the first) as ``dialect``'s driver binds them: each column's bind
    processor (SQLite's datetime text, JSON, booleans) applied to its values, as SQLAlchemy would apply it
    to every row's parameters."""
    if not rows:
        return BoundRows(table, (), [])
    columns = tuple(c.name for c in table.columns if c.name in rows[0])
    key = (dialect.name, dialect.driver, table.name, columns)
    processors = _processors.get(key)
    if processors is None:
        found: list[tuple[int, Callable[[Any], Any]]] = []
        for i, name in enumerate(columns):
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and dialect.name == "sqlite" and isinstance(table.c[name].type, sa.DateTime):
                found.append((i, sqlite_datetime))  # the same text, in a third of the time
            elif process is not None:
                found.append((i, process))
        processors = _processors[key] = tuple(found)
    get = itemgetter(*columns) if len(columns) > 1 else (lambda r: (r[columns[0]],))
    values: list[Any] = [get(r) for r in rows]
    if processors:
        values = [list(v) for v in values]
        for i, bind in processors:
            last: Any = _NOTHING
            done = None
            for v in values:
                if v[i] is not last:  # a batch's received_at, a release: the same object in many rows
                    last, done = v[i], bind(v[i])
                v[i] = done
    return BoundRows(table, columns, values)


def _rows_insert(conn: Connection, table: sa.Table, columns: tuple[str, ...], returning: bool) -> _RowsInsert:
    dialect = conn.dialect
    cache_key = ((dialect.name, dialect.driver, table.name, columns), returning)
    if (found := _inserts.get(cache_key)) is not None:
        return found
    # only the schema's own table and column names go into the SQL, quoted as SQLAlchemy quotes them
    quote, fmt = dialect.identifier_preparer.quote, dialect.identifier_preparer.format_table
    names, key = ", ".join(map(quote, columns)), ", ".join(quote(c.name) for c in table.primary_key)
    conflict = f" ON CONFLICT ({key}) DO NOTHING" + (f" RETURNING {key}" if returning else "")
    copy = dialect.name == "postgresql" and bool(  # a database may deny its users temporary tables
        conn.exec_driver_sql("SELECT has_database_privilege(current_database(), 'TEMPORARY')").scalar()
    )
    if copy:
        # a temporary table of the connection's own, emptied by each move (and at commit, whatever happens)
        staging = quote(f"edgeloop_in_{table.name}")
        # binary COPY (half the client's CPU of text, measured) needs each column's type: built-in types have
        # the same OID in every database; a type of the database's own (none so far) keeps COPY to text
        typed: dict[str, int] = dict(
            conn.exec_driver_sql(
                "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
                (fmt(table),),
            ).all()
        )
        oids = tuple(typed[c] for c in columns)
        binary = all(0 < oid < FIRST_NORMAL_OID for oid in oids)
        made = _RowsInsert(
            staging=f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {fmt(table)}) ON COMMIT DELETE ROWS",
            copy=f"COPY {staging} ({names}) FROM STDIN" + (" (FORMAT BINARY)" if binary else ""),
            oids=oids if binary else (),
            move=f"WITH moved AS (DELETE FROM {staging} RETURNING {names}) "  # noqa: S608  (identifiers only)
            f"INSERT INTO {fmt(table)} ({names}) SELECT {names} FROM moved{conflict}",
        )
    else:
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        made = _RowsInsert(
            head=f"INSERT INTO {fmt(table)} ({names}) VALUES ",  # noqa: S608  (identifiers only)
            row="(" + ", ".join([mark] * len(columns)) + ")",
            tail=conflict,
        )
    _inserts[cache_key] = made
    return made


def insert_rows(
    conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]] | BoundRows, returning: bool = False
) -> list[Any]:
    """INSERT ... ON CONFLICT (primary key) DO NOTHING of ``rows`` (dicts with the columns of the first, or
    ``bind_rows``'s) inside the caller's transaction; with ``returning``, the keys of the rows that were new
    (a key of one column).

    What ``conn.execute(insert(table).on_conflict_do_nothing(...), rows)`` stores, for less Python per row:
    each column's bind processor is applied to its values directly (SQLAlchemy builds every row's
    parameters anew), and the driver gets the batch in bulk: on SQLite one multi-row INSERT per
    ``MAX_PARAMS`` parameters, on PostgreSQL a COPY into a temporary table and one INSERT ... SELECT from
    it (psycopg parses a query's placeholders in Python, unless the query is short, and a multi-row
    INSERT's is not; a COPY has none). Errors are SQLAlchemy's, as from ``conn.execute``.
    """
    bound = rows if isinstance(rows, BoundRows) else bind_rows(conn.dialect, table, rows)
    if not bound.values:
        return []
    ins = _rows_insert(conn, table, bound.columns, returning)
    if ins.copy:
        return _copy_rows(conn, ins, bound.values, returning)
    per = max(1, MAX_PARAMS // len(bound.columns))
    new: list[Any] = []
    for start in range(0, len(bound.values), per):
        part = bound.values[start : start + per]
        sql = ins.head + ",".join([ins.row] * len(part)) + ins.tail
        result = conn.exec_driver_sql(sql, tuple([x for row in part for x in row]))
        if returning:
            new.extend(r[0] for r in result)
    return new


def _copy_rows(conn: Connection, ins: _RowsInsert, values: list[Any], returning: bool) -> list[Any]:
    """PostgreSQL: COPY the rows into the staging table, then move them into the table."""
    dbapi_conn: Any = conn.connection.dbapi_connection  # psycopg's: its cursor has copy()
    statement = ins.copy
    try:
        with dbapi_conn.cursor() as cur:
            cur.execute(ins.staging)
            with cur.copy(ins.copy) as copy:
                if ins.oids:
                    copy.set_types(list(ins.oids))
                for row in values:
                    copy.write_row(row)
            statement = ins.move
            cur.execute(ins.move)
            return [r[0] for r in cur.fetchall()] if returning else []
    except conn.dialect.loaded_dbapi.Error as e:  # as conn.execute raises it: is_unavailable tells the kind
        gone = conn.dialect.is_disconnect(e, dbapi_conn, None)
        if gone:
            conn.invalidate(e)
        raise sa.exc.DBAPIError.instance(
            statement, None, e, conn.dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=conn.dialect
        ) from e
