"""``overwatch-lab bench durability``: what a restart of the lab or its broker costs in data.

A publisher outside the lab keeps the PubAck of everything it sends, retries whatever was not
acknowledged (same ``Nats-Msg-Id``, as a careful device does) and never gives up. In the middle
of the run the lab is hit with one fault:

- ``sigkill``: ``kill -9`` of the ``overwatch-lab up`` process, then a new ``up`` on the same dir;
- ``sigterm``: a graceful stop of ``up``, then a new ``up``;
- ``broker-kill``: ``kill -9`` of the embedded nats-server only (the lab should restart it).

Afterwards, once the lab has consumed everything: sent, PubAck'd, stored (distinct history rows),
quarantined, lost (acknowledged, yet neither stored nor quarantined), duplicated (history rows
beyond one per message), whether every entity's KV state is its newest message, and whether the
broker kept its URL and credentials (devices reconnect with what they were given). Prints a table and
writes JSON. The publisher connects with the URL and credentials it first read from ``lab.json``; only
if that fails for ``--reread-after`` seconds does it read ``lab.json`` again (and says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import nats.errors

from overwatch_lab.bench.publisher import build
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.subjects import CONSUMER_TELEMETRY, STREAM_QUARANTINE, STREAM_TELEMETRY

ORG = "durability-org"
FAULTS = ("sigkill", "sigterm", "broker-kill")
_WINDOW = 2000  # acks in flight


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _UpProcess:
    """One ``overwatch-lab up --fleet none --no-dashboard`` child on a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        lab_json = self.data_dir / "lab.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(self.data_dir),
             "--fleet", "none", "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"overwatch-lab up exited with {self.proc.returncode}: {err[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(lab_json.read_text())
                if info.get("pid") == self.proc.pid:
                    return dict(info)
            time.sleep(0.05)
        raise RuntimeError(f"overwatch-lab up did not write {lab_json} within {timeout} s")

    def broker_pid(self) -> int | None:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "nats-server"],
                             capture_output=True, text=True).stdout.split()  # fmt: skip
        return int(out[0]) if out else None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(30) is None:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


class _Publisher:
    """Publishes every item until each has its PubAck, across disconnects and restarts."""

    def __init__(
        self, items: list[tuple[str, bytes, str]], info: dict[str, Any], reread: float, data_dir: Path
    ):
        self.items = items
        self.url, self.token = info["nats_url"], info.get("nats_auth")
        self.first_url, self.first_token = self.url, self.token
        self.reread_after_s = reread
        self.data_dir = data_dir
        self.acked: set[int] = set()
        self.attempts = 0
        self.rereads = 0
        self.give_up_after_s = 6 * reread
        self.gave_up = False
        self.reconnected_elsewhere = 0
        self.nc: Any = None

    async def _connect(self) -> None:
        while True:
            try:
                self.nc = await nats.connect(
                    self.url, **NatsAuth.from_dict(self.token or {}).kwargs(), max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                    connect_timeout=2, pending_size=64 * 1024 * 1024,
                    allow_reconnect=True,
                )  # fmt: skip
                return
            except (nats.errors.Error, OSError, TimeoutError):
                await asyncio.sleep(0.5)

    async def run(self, progress: Any) -> None:
        """Send everything once, then keep resending what was not acknowledged, until all is.

        Like a device with a store-and-forward buffer: live data goes first and what failed is
        backfilled afterwards, so a retried message reaches the stream after newer ones.
        """
        await self._connect()
        last_ok = time.monotonic()
        pending = list(range(len(self.items)))
        while pending:
            for start in range(0, len(pending), _WINDOW):
                chunk = pending[start : start + _WINDOW]
                js = self.nc.jetstream()
                futs = []
                for i in chunk:
                    subject, payload, msg_id = self.items[i]
                    self.attempts += 1
                    futs.append(js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=3))
                results = await asyncio.gather(*futs, return_exceptions=True)
                ok = 0
                for i, r in zip(chunk, results, strict=True):
                    if not isinstance(r, BaseException):
                        self.acked.add(i)
                        ok += 1
                progress(len(self.acked))
                if ok:
                    last_ok = time.monotonic()
                else:
                    await asyncio.sleep(0.2)
                    silent = time.monotonic() - last_ok
                    if silent > self.give_up_after_s:
                        _log(f"  publisher: nothing acknowledged for {silent:.0f} s; giving up")
                        self.gave_up = True
                        break
                    if silent > self.reread_after_s * (self.rereads + 1):
                        await self._reread()
            if self.gave_up:
                break
            pending = [i for i in pending if i not in self.acked]
        await self.nc.close()

    async def _reread(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads((self.data_dir / "lab.json").read_text())
            self.rereads += 1
            if (info["nats_url"], info.get("nats_auth")) != (self.url, self.token):
                _log(f"  publisher: nothing acknowledged for {self.reread_after_s:g} s; "
                     f"lab.json now says {info['nats_url']}: reconnecting there")  # fmt: skip
                self.reconnected_elsewhere += 1
                self.url, self.token = info["nats_url"], info.get("nats_auth")
                with contextlib.suppress(Exception):
                    await self.nc.close()
                await self._connect()


async def _caught_up(url: str, token: dict[str, str] | None, wait_s: float) -> dict[str, Any]:
    """Wait until every durable of the telemetry stream has nothing pending or unacknowledged.

    Every durable: with worker processes the stream is read by one durable per partition besides
    ``telemetry-processor`` (the unpartitioned subjects), and the messages of a stopped lab may sit
    on any of them until they are redelivered.
    """
    nc = await nats.connect(url, **NatsAuth.from_dict(token or {}).kwargs())
    js = nc.jetstream()
    deadline = time.monotonic() + wait_s
    pending: dict[str, tuple[int, int]] = {}
    try:
        while time.monotonic() < deadline:
            infos = await js.consumers_info(STREAM_TELEMETRY)
            pending = {str(i.name): (int(i.num_pending or 0), int(i.num_ack_pending or 0)) for i in infos}
            if CONSUMER_TELEMETRY in pending and not any(a or b for a, b in pending.values()):
                break
            await asyncio.sleep(0.2)
        q = await js.stream_info(STREAM_QUARANTINE)
        t = await js.stream_info(STREAM_TELEMETRY)
        return {
            "telemetry_pending": sum(a for a, _ in pending.values()) if pending else None,
            "telemetry_ack_pending": sum(b for _, b in pending.values()) if pending else None,
            "telemetry_durables": len(pending),
            "quarantine_records": q.state.messages,
            "stream_messages": t.state.messages,
        }
    finally:
        await nc.close()


def _stored(db: Path, uids: list[str]) -> tuple[int, int, int, set[str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT message_uid, COUNT(*) FROM telemetry WHERE org_id = ? GROUP BY message_uid",
                            (ORG,)).fetchall()  # fmt: skip
        late = conn.execute("SELECT COUNT(*) FROM telemetry WHERE org_id = ? AND late", (ORG,)).fetchone()[0]
    finally:
        conn.close()
    counts = dict(rows)
    wanted = set(uids)
    stored = {u for u in counts if u in wanted}
    dup = sum(c - 1 for u, c in counts.items() if u in wanted and c > 1)
    return len(stored), dup, late, stored


def _kv_newest(data_dir: Path, items: list[tuple[str, bytes, str]], acked: set[int]) -> tuple[int, int]:
    """(entities whose KV last_seen equals their newest acknowledged message, entities checked)."""
    from overwatch_lab.lab import Lab

    newest: dict[str, str] = {}
    for i in acked:
        env = json.loads(items[i][1])
        if env["timestamp"] > newest.get(env["entity_id"], ""):
            newest[env["entity_id"]] = env["timestamp"]
    lab = Lab.attach(data_dir, identity="internal")  # the bench's own lab: it reads every document
    try:
        ok = 0
        for eid, ts in newest.items():
            doc = lab.state_of(eid) or {}
            ok += doc.get("last_seen") == ts
    finally:
        lab.down()
    return ok, len(newest)


def run(*, fault: str, messages: int, entities: int, out_dir: Path, data_dir: Path | None = None,
        reread_after_s: float = 20.0) -> dict[str, Any]:  # fmt: skip
    """Run one durability trial and return its figures (also written to ``out_dir``)."""
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="overwatch-durability-")
        data_dir = Path(tmp.name)
    up = _UpProcess(data_dir)
    restarted: list[_UpProcess] = [up]
    t0 = time.time()
    try:
        _log(f"durability/{fault}: booting overwatch-lab up on {data_dir}")
        info = up.start()
        from overwatch_lab.lab import Lab

        lab = Lab.attach(data_dir, identity="internal")  # it registers the bench's organisation and entities
        ids = [f"dur-{k:04d}" for k in range(entities)]
        try:
            lab.register_org(ORG, "Durability")
            lab.register_entities(
                [{"org_id": ORG, "entity_id": e, "entity_type": "aircraft_multirotor"} for e in ids]
            )
        finally:
            lab.down()
        items = build(ORG, ids, messages)
        pub = _Publisher(items, info, reread_after_s, data_dir)
        fault_at = messages // 3
        state: dict[str, Any] = {"fired": None, "last": 0.0}

        def progress(n: int) -> None:
            now = time.monotonic()
            if now - state["last"] > 1.0:
                state["last"] = now
                _log(f"  acked {n:,}/{messages:,}")
            if state["fired"] is None and n >= fault_at:
                # On a thread: the publisher keeps publishing (and failing, and retrying) meanwhile.
                state["fired"] = asyncio.get_running_loop().run_in_executor(
                    None, _fire, fault, restarted, data_dir
                )

        async def publish_through_the_fault() -> dict[str, Any]:
            await pub.run(progress)
            return await state["fired"] if state["fired"] is not None else {}

        fault_log = asyncio.run(publish_through_the_fault())
        current = restarted[-1]
        info_now = json.loads((data_dir / "lab.json").read_text())
        caught: dict[str, Any] = {"quarantine_records": 0}
        kv_ok = kv_n = 0
        if not pub.gave_up:
            _log("  all acknowledged; waiting for the lab to consume everything")
            caught = asyncio.run(_caught_up(info_now["nats_url"], info_now.get("nats_auth"), 120))
            kv_ok, kv_n = _kv_newest(data_dir, items, pub.acked)
        current.close()
        uids = [msg_id for _, _, msg_id in items]
        n_stored, dup, late, stored = _stored(data_dir / "overwatch.db", uids)
        acked_uids = {items[i][2] for i in pub.acked}
        quarantined = caught["quarantine_records"]
        lost = len(acked_uids - stored) - min(quarantined, len(acked_uids - stored))
        result = {
            "fault": fault,
            "messages": messages,
            "entities": entities,
            "sent": len(items),
            "publish_attempts": pub.attempts,
            "pubacked": len(pub.acked),
            "stored": n_stored,
            "quarantined": quarantined,
            "lost": lost,
            "duplicated": dup,
            "stored_late": late,
            "kv_newest_ok": kv_ok,
            "kv_entities": kv_n,
            "url_and_token_kept": (info_now["nats_url"], info_now.get("nats_auth"))
            == (pub.first_url, pub.first_token),
            "publisher_moved_to_new_url": pub.reconnected_elsewhere,
            "publisher_gave_up": pub.gave_up,
            "restarts": len(restarted) - 1,
            **fault_log,
            **caught,
            "elapsed_s": round(time.time() - t0, 2),
        }
    finally:
        for p in restarted:
            p.close()
        if tmp is not None:
            tmp.cleanup()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"durability-{fault}.json").write_text(json.dumps(result, indent=2))
    return result


def _fire(fault: str, restarted: list[_UpProcess], data_dir: Path) -> dict[str, Any]:
    up = restarted[-1]
    _log(f"  fault: {fault}")
    t = time.monotonic()
    if fault == "broker-kill":
        pid = up.broker_pid()
        if pid is None:
            return {"fault_error": "no nats-server child found"}
        os.kill(pid, signal.SIGKILL)
        code = up.wait(15)  # a supervised lab keeps running; an unsupervised one stops
        if code is None:
            return {"lab_survived_broker_kill": True}
        _log(f"  the lab exited with {code} after its broker died; starting a new one")
        new = _UpProcess(data_dir)
        new.start()
        restarted.append(new)
        return {"lab_survived_broker_kill": False, "lab_exit_code": code}
    up.signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
    code = up.wait(60)
    new = _UpProcess(data_dir)
    new.start()
    restarted.append(new)
    return {"old_lab_exit_code": code, "restart_s": round(time.monotonic() - t, 2)}


def report(r: dict[str, Any]) -> str:
    """A short human-readable table of one trial."""
    keys = ("sent", "pubacked", "stored", "quarantined", "lost", "duplicated", "stored_late", "kv_newest_ok", "kv_entities",
            "url_and_token_kept", "publisher_moved_to_new_url", "publisher_gave_up", "restarts", "elapsed_s")  # fmt: skip
    lines = [f"durability / {r['fault']}: {r['messages']:,} messages, {r['entities']} entities"]
    lines += [f"  {k:<26} {r[k]}" for k in keys]
    return "\n".join(lines)
