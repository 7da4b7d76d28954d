"""Compare-and-set read-modify-write of entity documents in the global-state KV bucket.

Every writer of an entity document (entity worker, telemetry worker, event worker, synchronizer)
goes through :class:`EntityKV`, so no writer can silently drop another writer's fields: a write
carries the revision it read, and a conflict re-reads and re-applies the same mutation.

This module is the KV seam: nats-py's errors never leave it. A failed KV call raises
:class:`~overwatch_lab.errors.KvError` (the key in the message, the nats-py error chained) and a
conflict storm :class:`~overwatch_lab.errors.KvConflictError`; cancellation propagates as is.

Many documents are written at once with :meth:`EntityKV.mutate_many`: one compare-and-set
publish per document (``Nats-Expected-Last-Subject-Sequence`` on ``$KV.<bucket>.<key>``, exactly
what ``KeyValue.update`` sends), every acknowledgement answered to one shared inbox subscription
and collected against one deadline, instead of a JetStream publish with its own future, reply
subscription lookup and ``wait_for`` per document.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
import nats.errors
import nats.js.errors as js_errors
import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from overwatch_lab.errors import KvConflictError, KvError

log = logging.getLogger(__name__)

Doc = dict[str, Any]
Mutation = Callable[[Doc | None], Doc | None]
"""Receives the current document (None if absent) and returns the document to write, or None
to write nothing. It may mutate and return its argument: the caller never reuses a document
whose write failed."""

Current = tuple[int, Doc | None]
"""A (revision, document) pair; (0, None) = absent."""

_WRONG_LAST_SEQUENCE = (10071, 10164)  # JSStreamWrongLastSequenceErrF / ...ConstantErr: a CAS conflict
_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
WRITE_TIMEOUT_S = 5.0  # a batch of CAS writes not all acknowledged by then: the rest failed


@contextlib.contextmanager
def _kv_errors(what: str) -> Iterator[None]:
    """Translate nats-py's errors of the KV call(s) inside into :class:`KvError`."""
    try:
        yield
    except nats.errors.Error as exc:  # nats.js.errors.* and nats-py's timeouts are subclasses
        raise KvError(f"KV {what} failed: {type(exc).__name__}: {exc}".rstrip(": ")) from exc


def _finite(obj: Any) -> bool:
    """True when no float anywhere in ``obj`` is NaN or infinite."""
    t = type(obj)
    if t is float:
        return bool(obj - obj == 0.0)
    if t is dict:
        obj = obj.values()
    elif t is not list and t is not tuple:
        return True
    for v in obj:  # a loop, not all(genexpr): this runs for every KV write
        if not _finite(v):
            return False
    return True


def dumps(doc: Doc) -> bytes:
    """Serialise an entity document compactly (the bytes of ``json.dumps(doc, allow_nan=False)``'s
    JSON value; orjson, ~7× faster).

    orjson writes NaN/Infinity as ``null``, which would silently change a document, so a
    non-finite float is rejected first, as ``json`` does; what orjson cannot encode (an integer
    beyond 64 bits, a non-string key) is encoded by ``json`` as before.

    Raises:
        ValueError: the document holds NaN or an infinity.
        TypeError: the document holds a value JSON cannot represent.
    """
    if not _finite(doc):
        raise ValueError(f"entity document holds a non-finite number: {doc!r:.200}")
    return _encode(doc)


def _encode(doc: Doc) -> bytes:
    """:func:`dumps` without the finiteness check, for a document known to be finite."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError: > 64-bit int, non-str key, unknown type
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


_decode_doc = msgspec.json.Decoder().decode


def loads(value: bytes) -> Any:
    """Parse a stored entity document (msgspec, ~2.5× faster than ``json.loads``, same result:
    exact big integers; what msgspec refuses, e.g. ``1e400``, is parsed by ``json`` as before)."""
    try:
        return _decode_doc(value)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(value)


class EntityKV:
    """CAS access to entity documents (key = bare entity_id)."""

    def __init__(self, kv: KeyValue, *, attempts: int = 5, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.kv = kv
        self.attempts = attempts
        self.write_timeout_s = write_timeout_s
        self.conflicts = 0
        # mutate_many: the shared inbox of CAS acknowledgements (subscribed at first use; it lives
        # as long as the connection) and the writes waiting for theirs, by reply token.
        self._nc = kv._js._nc
        self._pre = kv._pre  # "$KV.<bucket>."
        self._inbox = ""
        self._sub: Subscription | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, _CasBatch] = {}
        # key -> the revision of the last document this client wrote there: a document it
        # checked finite (dumps), so a mutation that adds only finite numbers keeps it finite.
        self._finite_rev: dict[str, int] = {}

    async def read(self, key: str) -> tuple[int, Doc | None]:
        """Return (revision, document); (0, None) when the key is absent or deleted.

        Raises:
            KvError: the read failed.
        """
        with _kv_errors(f"read of {key!r}"):
            try:
                entry = await self.kv.get(key)
            except js_errors.KeyNotFoundError:  # also KeyDeletedError
                return 0, None
        if entry.value is None:
            return 0, None
        return entry.revision or 0, loads(entry.value)

    async def mutate(
        self, key: str, mutation: Mutation, *, current: tuple[int, Doc | None] | None = None
    ) -> tuple[int, Doc | None]:
        """Apply ``mutation`` and write the result with compare-and-set, retrying on conflict.

        Args:
            key: entity_id.
            mutation: see :data:`Mutation`.
            current: a (revision, document) the caller already holds (a cache); read when None.

        Returns:
            (revision, document) as stored after the call.

        Raises:
            KvConflictError: still conflicting after ``attempts`` tries.
            KvError: a read or write failed otherwise.
        """
        return await self._mutate(key, mutation, current, 0)

    async def _mutate(
        self, key: str, mutation: Mutation, current: Current | None, first_attempt: int
    ) -> Current:
        rev, doc = current if current is not None else await self.read(key)
        for attempt in range(first_attempt, self.attempts):
            new = mutation(doc)
            if new is None:
                return rev, doc
            data = dumps(new)
            with _kv_errors(f"write of {key!r}"):
                try:
                    if rev == 0:
                        new_rev = await self.kv.create(key, data)
                    else:
                        new_rev = await self.kv.update(key, data, last=rev)
                    self._finite_rev[key] = new_rev
                    return new_rev, new
                except js_errors.KeyWrongLastSequenceError:  # another writer won: re-read, re-apply
                    pass
            self.conflicts += 1
            await asyncio.sleep(0.01 * 2**attempt)
            rev, doc = await self.read(key)
        raise KvConflictError(f"KV write of {key!r} still conflicted after {self.attempts} attempts")

    async def mutate_many(
        self, writes: Sequence[tuple[str, Mutation, Current | None]], *, adds_finite: bool = False
    ) -> list[Current | Exception]:
        """:meth:`mutate` for many keys at once, the CAS publishes pipelined (module docstring).

        Each write is ``(key, mutation, current)`` as the arguments of :meth:`mutate`; each key at
        most once. A write whose ``current`` is unknown or absent (revision 0) goes through
        :meth:`mutate` (a read, or ``create``, which also revives a deleted key). A conflict
        re-reads and re-applies that key's mutation as :meth:`mutate` does after its first try.
        A write not acknowledged within ``write_timeout_s`` failed (it may still have landed:
        its next write then conflicts and re-reads).

        ``adds_finite``: the caller vouches that its mutations put only finite numbers in a
        document (the telemetry worker's projections skip the others). A document this client
        wrote itself at ``current``'s revision is then encoded without walking it for NaN and
        infinities again (that walk costs more than the encoding: 18 vs 12 µs for a drone's
        document); any other document is checked as :func:`dumps` does.

        Returns:
            per write, in order: (revision, document) as stored, or the exception that made it
            fail: what :meth:`mutate` would raise (:class:`KvError`, :class:`KvConflictError`)
            or the mutation's own (an unencodable document too).

        Raises:
            asyncio.CancelledError: as usual; acknowledgements still pending are abandoned.
        """
        out: list[Current | Exception | None] = [None] * len(writes)
        slow: list[int] = []
        sends: list[tuple[int, bytes, int, Doc]] = []
        finite_rev = self._finite_rev
        for i, (_, mutation, current) in enumerate(writes):
            if current is None or current[0] == 0:
                slow.append(i)
                continue
            rev, doc = current
            try:
                new = mutation(doc)
                if new is None:
                    out[i] = (rev, doc)
                    continue
                trusted = adds_finite and finite_rev.get(writes[i][0]) == rev
                sends.append((i, _encode(new) if trusted else dumps(new), rev, new))
            except Exception as exc:  # this write fails, not the others
                out[i] = exc
        slow_task = asyncio.gather(*(self._mutate_many_slow(writes[i]) for i in slow), return_exceptions=True)
        batch = _CasBatch()
        try:
            if sends:
                await self._send(writes, sends, batch)
                if batch.pending and batch.failure is None:
                    try:
                        async with asyncio.timeout(self.write_timeout_s):
                            await batch.done.wait()
                    except TimeoutError:
                        batch.fail(KvError(f"failed: no acknowledgement within {self.write_timeout_s:g} s"))
        finally:
            for token in batch.pending:
                self._waiting.pop(token, None)
            slow_results = await slow_task  # also when cancelled: no write is left running
        for i, res in zip(slow, slow_results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, Exception):
                raise res
            out[i] = res
        if batch.failure is not None:  # every write not answered (or not sent) failed with it
            for i, _, _, _ in sends:
                if i not in batch.answers:
                    out[i] = _with_key(batch.failure, writes[i][0])
        conflicted: list[int] = []
        for i, answer in batch.answers.items():
            if answer is None:
                conflicted.append(i)
            else:
                if not isinstance(answer, KvError):
                    finite_rev[writes[i][0]] = answer[0]
                out[i] = answer if not isinstance(answer, KvError) else _with_key(answer, writes[i][0])
        if conflicted:
            self.conflicts += len(conflicted)
            await asyncio.sleep(0.01)  # as mutate after its first conflict: re-read, re-apply
            retried = await asyncio.gather(
                *(self._mutate(writes[i][0], writes[i][1], None, 1) for i in conflicted),
                return_exceptions=True,
            )
            for i, res in zip(conflicted, retried, strict=True):
                if isinstance(res, BaseException) and not isinstance(res, Exception):
                    raise res
                out[i] = res
        return [
            KvError(f"KV write of {writes[i][0]!r} was not answered") if res is None else res
            for i, res in enumerate(out)
        ]

    async def _send(
        self,
        writes: Sequence[tuple[str, Mutation, Current | None]],
        sends: list[tuple[int, bytes, int, Doc]],
        batch: _CasBatch,
    ) -> None:
        """Publish the CAS writes ``sends`` (index, data, revision, new document) of one batch."""
        try:
            if not self._inbox:
                self._inbox = self._nc.new_inbox()
                self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
            publish, pre, inbox, waiting = self._nc.publish, self._pre, self._inbox, self._waiting
            for i, data, rev, new in sends:
                token = str(next(self._tokens))
                batch.pending[token] = (i, new)
                waiting[token] = batch
                await publish(
                    pre + writes[i][0],
                    data,
                    reply=f"{inbox}.{token}",
                    headers={_EXPECTED_LAST_SUBJECT_SEQ: str(rev)},
                )
        except nats.errors.Error as exc:  # closed, draining, reconnect buffer full
            if self._sub is None:
                self._inbox = ""
            batch.fail(_kv_error(exc))

    async def _mutate_many_slow(self, write: tuple[str, Mutation, Current | None]) -> Current:
        key, mutation, current = write
        return await self._mutate(key, mutation, current, 0)

    async def _on_ack(self, msg: Msg) -> None:
        """One CAS publish's acknowledgement (or its error) from the server."""
        token = msg.subject[len(self._inbox) + 1 :]
        batch = self._waiting.pop(token, None)
        if batch is None:  # its batch gave up waiting (deadline, failure)
            return
        i, new = batch.pending.pop(token)
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            batch.fail(_kv_error(nats.errors.NoRespondersError()))  # no stream for the bucket
            return
        try:
            resp = orjson.loads(msg.data)
            error = resp.get("error")
            if error is None:
                batch.answer(i, (int(resp["seq"]), new))
                return
            err_code = error.get("err_code")
            if err_code in _WRONG_LAST_SEQUENCE:
                batch.answer(i, None)
                return
            api = js_errors.APIError(
                code=error.get("code"), err_code=err_code, description=error.get("description")
            )
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            api = js_errors.APIError(description=f"unreadable acknowledgement {msg.data[:200]!r}: {exc}")
        err = KvError(f"failed: {api.description} (code {api.code}, err_code {api.err_code})")
        err.__cause__ = api
        batch.answer(i, err)

    async def close(self) -> None:
        """Unsubscribe the shared acknowledgement inbox (it also ends with the connection)."""
        sub, self._sub, self._inbox = self._sub, None, ""
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def delete(self, key: str) -> bool:
        """Delete a document; returns False when it did not exist.

        Raises:
            KvError: the read or the delete failed.
        """
        rev, doc = await self.read(key)
        if doc is None:
            return False
        with _kv_errors(f"delete of {key!r}"):
            await self.kv.delete(key)
        return True

    async def all(self) -> dict[str, tuple[int, Doc]]:
        """Return every live document in the bucket (replayed with a watcher, not keys()+get()).

        Raises:
            KvError: the replay failed or stalled for 5 s.
        """
        out: dict[str, tuple[int, Doc]] = {}
        with _kv_errors("replay of every document"):
            watcher = await self.kv.watchall()
            try:
                while True:
                    entry = await watcher.updates(timeout=5.0)
                    if entry is None:  # end of the initial replay
                        break
                    if entry.operation is None and entry.value:
                        out[entry.key] = (entry.revision or 0, loads(entry.value))
                    else:
                        out.pop(entry.key, None)
            finally:
                with contextlib.suppress(nats.errors.Error):  # the replay's own error matters more
                    await watcher.stop()
        return out


def _kv_error(exc: nats.errors.Error) -> KvError:
    """A batch-wide write failure (named per key by :func:`_with_key`)."""
    err = KvError(f"failed: {type(exc).__name__}: {exc}".rstrip(": "))
    err.__cause__ = exc
    return err


def _with_key(err: KvError, key: str) -> KvError:
    """A copy of a batch-wide (or key-less) write error that names the key."""
    out = KvError(f"KV write of {key!r} {err}")
    out.__cause__ = err.__cause__ or err
    return out


class _CasBatch:
    """The CAS publishes of one :meth:`EntityKV.mutate_many` call awaiting acknowledgement."""

    __slots__ = ("pending", "answers", "failure", "done")

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, Doc]] = {}  # reply token -> (write index, new document)
        self.answers: dict[int, Current | KvError | None] = {}  # None = conflict
        self.failure: KvError | None = None  # fails every write still pending
        self.done = asyncio.Event()

    def answer(self, i: int, res: Current | KvError | None) -> None:
        """Record write ``i``'s answer (None = conflict); its token is already popped."""
        self.answers[i] = res
        if not self.pending:
            self.done.set()

    def fail(self, err: KvError) -> None:
        """Fail every write not answered yet; stop waiting."""
        if self.failure is None:
            self.failure = err
        self.done.set()
