"""The copy engine: binary COPY of tables from one connection to another through a bounded
buffer filled by a reader thread (TableStream), or one table at a time (stream_table)."""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import threading

import psycopg2
from psycopg2 import sql

from ...decisions.schema import Table
from .catalog import columns
from .session import DatabaseError, first_line

logger = logging.getLogger('wazo-ha')


# the source runs ahead of the target by this much at most (what a copy holds in memory)
STREAM_BUFFER_BYTES = 32 << 20
_CHUNK = 1 << 18
_END, _FAILED = object(), object()


class _QueueWriter(io.RawIOBase):
    """Where a BufferedWriter spills its full buffers: into the stream's queue."""

    def __init__(self, stream: TableStream):
        super().__init__()
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._stream._put(bytes(data))
        return len(data)


class _QueueReader:
    """One table's rows for the target's COPY FROM, read from the stream's queue."""

    def __init__(self, stream: TableStream):
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        item = self._stream._get()
        if item is _END:
            return b''
        if item is _FAILED:
            raise DatabaseError('the master stopped sending rows')
        return item


class TableStream:
    """Binary COPY of tables from source to target, one after the other.

    A thread reads the tables from the source in order into a buffer of at most
    STREAM_BUFFER_BYTES (plus one chunk), so the source goes on reading while the target is
    busy between two loads (building the indexes of the table just loaded); nothing else is
    kept in memory or written anywhere. Use as a context manager, then copy_next() per
    table."""

    def __init__(self, source, items: list[tuple[Table, sql.Composable | None]]):
        self._chunks: collections.deque = collections.deque()
        self._queued = 0  # bytes in _chunks
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._items = list(items)
        self._thread = threading.Thread(target=self._produce, args=(source,), daemon=True,
                                        name='copy-from-master')

    def __enter__(self) -> TableStream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # an unfinished table is read to its end and dropped: the source's connection stays
        # usable (a COPY cut short would leave it in the middle of the protocol)
        self._stop.set()
        self._thread.join()

    def _put(self, item) -> None:
        size = len(item) if isinstance(item, bytes) else 0
        with self._ready:
            while self._queued and self._queued + size > STREAM_BUFFER_BYTES:
                if self._stop.is_set():
                    return
                self._ready.wait(0.1)
            if self._stop.is_set():
                return
            self._chunks.append(item)
            self._queued += size
            self._ready.notify_all()

    def _get(self):
        with self._ready:
            while not self._chunks:
                self._ready.wait()
            item = self._chunks.popleft()
            if isinstance(item, bytes):
                self._queued -= len(item)
            self._ready.notify_all()
            return item

    def _produce(self, source) -> None:
        try:
            with source.cursor() as cur:
                for table, where in self._items:
                    if self._stop.is_set():
                        return
                    with io.BufferedWriter(_QueueWriter(self), buffer_size=_CHUNK) as sink:
                        cur.copy_expert(_copy_out(source, table, where), sink, size=_CHUNK)
                    self._put(_END)
        except BaseException as e:  # reported by the target's side
            self._failure.append(e)
            self._put(_FAILED)

    def copy_next(self, target, table: Table) -> int:
        """Load the next table of the stream into target; the number of rows written."""
        in_sql = sql.SQL('COPY {} ({}) FROM STDIN (FORMAT binary)').format(
            sql.Identifier(table.name), columns(table)).as_string(target)
        with target.cursor() as cur:
            # when the slave's connection dies mid-COPY, psycopg2 prints a traceback itself
            # (PyErr_Print): keep it for the log, stderr gets our one line
            printed = io.StringIO()
            try:
                with contextlib.redirect_stderr(printed):
                    cur.copy_expert(in_sql, _QueueReader(self), size=_CHUNK)
            except Exception as e:
                if printed.getvalue():
                    logger.debug('psycopg2 printed: %s', printed.getvalue())
                if self._failure:
                    raise DatabaseError(f'reading {table.name} on the master: '
                                        f'{first_line(self._failure[0])}') from None
                # psycopg2 may wrap the server's error in a SystemError: report the cause
                cause = e if isinstance(e, psycopg2.Error) else (e.__cause__ or e)
                raise DatabaseError(f'writing {table.name} on the slave: '
                                    f'{first_line(cause)}') from None
            return cur.rowcount


def _copy_out(source, table: Table, where: sql.Composable | None) -> str:
    if where is None:  # the table form skips the executor: faster than COPY (SELECT ...)
        return sql.SQL('COPY {} ({}) TO STDOUT (FORMAT binary)').format(
            sql.Identifier(table.name), columns(table)).as_string(source)
    return sql.SQL('COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT binary)').format(
        columns(table), sql.Identifier(table.name), where).as_string(source)


def stream_table(source, target, table: Table, where: sql.Composable | None = None) -> int:
    """COPY one table (or the rows matching `where`) from source to target. Returns the
    number of rows written on target."""
    with TableStream(source, [(table, where)]) as stream:
        return stream.copy_next(target, table)
