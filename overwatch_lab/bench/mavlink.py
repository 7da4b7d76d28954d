"""``overwatch-lab bench mavlink``: MAVLink packets per second the bridge carries into the lab.

One run, three figures on the same capture:

- **capture**: N drones (default 1,000) encoded with pymavlink's own encoder (MAVLink 2,
  ardupilotmega dialect): per drone one HEARTBEAT, then the simulators' default mix
  (GLOBAL_POSITION_INT, ATTITUDE, VFR_HUD, SYS_STATUS, GPS_RAW_INT, BATTERY_STATUS) in turn,
  interleaved over the drones. A MAVLink system id is one byte, so the drones are spread over
  links of up to ``DRONES_PER_LINK`` system ids, each a telemetry log (``.tlog``) of its own and
  bridged by a :class:`~overwatch_lab.mavlink.Bridge` of its own (entity ids ``{org}-l{link}-mav{sysid}``).
- **ceiling**: pymavlink's raw parse rate (``MAVLink.parse_buffer`` over every packet's bytes,
  no mapping, no I/O), and the bridge's own CPU work without NATS (``Bridge.feed``: parse,
  envelope, JSON), both in this process.
- **end to end**: a throwaway lab; the drones' HEARTBEATs are replayed first and the clock starts
  once every drone is registered (as ``bench ingest`` registers its entities first); then the
  rest of the logs are replayed through the bridges as fast as the lab takes them (all links at
  once, in a process of their own, :mod:`overwatch_lab.bench.bridge_process`, as a real bridge
  runs beside a lab: no GIL shared with the lab), timed from the first packet until every
  projected packet's history row is stored. The ratio to the raw parse rate is printed with it,
  and the bridges' own figure: packets/s until JetStream acknowledged them all.

Prints a table on stdout (progress on stderr) and writes JSON to ``--out``. The figures of a
shared, noisy machine are low and vary: compare runs made back to back.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from overwatch_lab.bench import bridge_process
from overwatch_lab.bench.ceilings import say
from overwatch_lab.config import LabConfig, MiB
from overwatch_lab.lab import Lab
from overwatch_lab.mavlink import Bridge
from overwatch_lab.mavlink.bridge import REPLAY_PEER
from overwatch_lab.mavlink.tlog import write_record
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY
from overwatch_lab.store import queries

ORG = "bench-mav"
DRONES_PER_LINK = 250  # system ids 1..250 on one link (255 is the ground station's)
PROGRESS_EVERY_S = 1.0  # s between progress lines
POLL_S = 0.1  # s between two counts of stored rows (the end-to-end time's resolution)
CHILD_EXIT_S = 30.0  # s the bridge process may take to exit once told to


def _mix(mav: Any, k: int, i: int) -> Any:
    """Message ``i`` of drone ``k`` after its HEARTBEAT (the simulators' default mix)."""
    j = i % 6
    if j == 0:
        return mav.global_position_int_encode(
            i, 329488100 + i, -968013200 - k, 152400, 30480, 123, -45, 6, 9000
        )
    if j == 1:
        return mav.attitude_encode(i, 0.01, -0.02, (i % 628) / 100.0, 0.0, 0.0, 0.1)
    if j == 2:
        return mav.vfr_hud_encode(12.5, 12.0, i % 360, 55, 152.4, 0.1)
    if j == 3:
        return mav.sys_status_encode(0x20_802F, 0x20_802F, 0x20_802F, 250, 15800, 1200, 80, 0, 0, 0, 0, 0, 0)
    if j == 4:
        return mav.gps_raw_int_encode(
            i * 1000, 3, 329488100 + i, -968013200, 152400, 120, 180, 1200, 9000, 12
        )
    return mav.battery_status_encode(0, 1, 1, 2500, [3950] * 4 + [65535] * 6, 1200, 1000, 360, 80)


def build_capture(drones: int, packets: int, folder: Path) -> dict[str, Any]:
    """Write the capture: one tlog per link; return paths, the raw packets and counts."""
    from pymavlink.dialects.v20 import ardupilotmega as mavlink2

    mavs = [mavlink2.MAVLink(None, srcSystem=k % DRONES_PER_LINK + 1, srcComponent=1) for k in range(drones)]
    links = (drones + DRONES_PER_LINK - 1) // DRONES_PER_LINK
    reg = [(folder / f"link{n}-heartbeats.tlog").open("wb") for n in range(links)]
    files = [(folder / f"link{n}.tlog").open("wb") for n in range(links)]
    raw: list[bytes] = []
    t_us = (time.time_ns() // 1000) - packets * 1000  # one packet per ms, ending now
    started = time.perf_counter()
    try:
        for i in range(packets):
            k = i % drones
            mav = mavs[k]
            msg = mav.heartbeat_encode(2, 3, 81, 5, 4) if i < drones else _mix(mav, k, i // drones)
            buf = msg.pack(mav)
            mav.seq = (mav.seq + 1) % 256
            t_us += 1000
            (reg if i < drones else files)[k // DRONES_PER_LINK].write(write_record(t_us, buf))
            raw.append(buf)
    finally:
        for f in reg + files:
            f.close()
    return {
        "registration": [folder / f"link{n}-heartbeats.tlog" for n in range(links)],
        "paths": [folder / f"link{n}.tlog" for n in range(links)],
        "raw": raw,
        "links": links,
        "encode_s": time.perf_counter() - started,
        "bytes": sum(map(len, raw)),
    }


def raw_parse_rate(raw: list[bytes], repeats: int = 3) -> float:
    """pymavlink's parse rate (packets/s, best of ``repeats``) over the capture's bytes, in one buffer."""
    from pymavlink.dialects.v20 import ardupilotmega as mavlink2

    blob = b"".join(raw)
    best = float("inf")
    for _ in range(repeats):
        parser = mavlink2.MAVLink(None)
        parser.robust_parsing = True
        started = time.perf_counter()
        got = parser.parse_buffer(blob) or []
        best = min(best, time.perf_counter() - started)
        assert len(got) == len(raw), (len(got), len(raw))
    return len(raw) / best


def bridge_cpu_rate(raw: list[bytes], drones: int) -> float:
    """The bridge's own work per packet without NATS (``Bridge.feed``: parse, map, envelope, JSON)."""
    bridges = [
        Bridge("nats://127.0.0.1:1", org=ORG, listen=None, entity_id=f"{{org}}-l{n}-mav{{sysid}}")
        for n in range((drones + DRONES_PER_LINK - 1) // DRONES_PER_LINK)
    ]
    ts = time.time_ns() // 1000
    out = 0
    started = time.perf_counter()
    for i, buf in enumerate(raw):
        out += len(bridges[(i % drones) // DRONES_PER_LINK].feed(buf, REPLAY_PEER, ts + i))
    elapsed = time.perf_counter() - started
    assert out >= len(raw), (out, len(raw))  # every packet is projected (plus the registrations)
    return len(raw) / elapsed


class _BridgeProcess:
    """The bridges in a process of their own (:mod:`overwatch_lab.bench.bridge_process`), owned here.

    Its stdout lines are read by a thread into a queue (this process polls the lab meanwhile);
    :meth:`close` ends the child (stdin closed, then SIGKILL if it has not exited) and the thread.
    """

    def __init__(self, lab: Lab, links: list[tuple[Path, Path]]) -> None:
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.progress: list[tuple[float, int, int]] = []  # (s since go, packets read, acked)
        self.proc = subprocess.Popen(
            bridge_process.argv(lab.nats_url, ORG, links),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=lab.nats_auth.env(),
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name="bench-mavlink-bridges", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)  # EOF: the child exited

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """Return the child's next ``key`` line (recording progress lines on the way).

        Raises:
            TimeoutError: no such line within ``timeout`` seconds.
            RuntimeError: the child exited before it.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise TimeoutError(f"the bridge process sent no {key!r} line within {timeout:g} s") from None
            if line is None:
                raise RuntimeError(f"the bridge process exited ({self.proc.wait()}) before its {key!r} line")
            if "progress" in line:
                p = line["progress"]
                self.progress.append((p["t"], p["read"], p["acked"]))
            if key in line:
                return dict(line[key])

    def go(self) -> None:
        """Tell the child to start the timed replay."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Stop the child (it exits on its own after ``done``, or when its stdin closes) and the reader."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(CHILD_EXIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        finally:
            self._reader.join(CHILD_EXIT_S)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def _stored(lab: Lab) -> int:
    frame = queries.read_frame(lab.db_url, "SELECT COUNT(*) AS n FROM telemetry WHERE org_id = ?", (ORG,))
    return int(frame.iloc[0]["n"])


def run(
    *,
    drones: int = 1000,
    packets: int = 100_000,
    out_dir: Path,
    workers: int | None = None,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Run the benchmark and return the result dict (also written to ``out_dir``)."""
    if drones < 1 or packets < drones:
        raise ValueError(f"need drones >= 1 and packets >= drones, got {drones} and {packets}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="overwatch-bench-mavlink-") as tmp:
        say(f"encoding a capture of {drones} drones, {packets} packets, with pymavlink")
        cap = build_capture(drones, packets, Path(tmp))
        say("measuring pymavlink's raw parse rate (best of 3) and the bridge's CPU rate without NATS")
        parse_rate = raw_parse_rate(cap["raw"])
        cpu_rate = bridge_cpu_rate(cap["raw"], drones)
        del cap["raw"]
        extra: dict[str, Any] = {} if workers is None else {"workers": workers}
        cfg = LabConfig(data_dir=Path(tmp) / "lab", **extra).with_stream_limits(
            STREAM_TELEMETRY, max_msgs=max(packets * 3, 100_000), max_bytes=max(packets * 3072, 256 * MiB)
        )
        say(f"booting a lab ({cfg.workers} telemetry worker processes); replaying {cap['links']} links")
        with Lab(cfg) as lab:
            say(
                f"registering the {drones} drones (their HEARTBEATs) in a bridge process before the clock starts"
            )
            bridges = _BridgeProcess(lab, list(zip(cap["registration"], cap["paths"], strict=True)))
            try:
                bridges.expect("ready", timeout_s)
                lab.wait_for(
                    lambda: len(lab.frames.states()) >= drones,
                    timeout=timeout_s, interval=0.2, what=f"{drones} entities in KV",
                )  # fmt: skip
                lab.wait_for(  # the registration HEARTBEATs' own rows, so the target below is exact
                    lambda: _stored(lab) >= drones,
                    timeout=timeout_s, interval=0.2, what=f"{drones} HEARTBEAT rows in history",
                )  # fmt: skip
                target = _stored(lab) + packets - drones
                say(
                    f"replaying {packets - drones} packets on {cap['links']} links as fast as the lab takes them"
                )
                started = time.perf_counter()
                bridges.go()
                progress: list[tuple[float, int]] = []
                stored = 0
                deadline = started + timeout_s
                shown = started
                while stored < target and time.perf_counter() < deadline:
                    time.sleep(POLL_S)  # the sampling period of the end-to-end clock, not a synchronisation
                    stored = _stored(lab)
                    now = time.perf_counter()
                    progress.append((round(now - started, 2), stored))
                    if now - shown >= PROGRESS_EVERY_S or stored >= target:
                        shown = now
                        t = now - started
                        acked = (
                            f", {bridges.progress[-1][2]} acked by the bridges" if bridges.progress else ""
                        )
                        say(f"  {t:6.1f} s  {stored:>8} of {packets} packets stored{acked}")
                end_to_end_s = time.perf_counter() - started
                done = bridges.expect("done", 60)
            finally:
                bridges.close()
            stats = lab.stats()
            kv_docs = int(lab.frames.states().shape[0])
            quarantined = len(lab.frames.quarantine())
    timed = packets - drones
    stored_timed = stored - (target - timed)
    bridge_stats = done["bridges"]
    replay_s = done["ended_at"] - done["started_at"]
    published = sum(b["published"] for b in bridge_stats) - drones  # the HEARTBEATs went before
    result = {
        "benchmark": "mavlink",
        "drones": drones,
        "packets": packets,
        "links": cap["links"],
        "capture_bytes": cap["bytes"],
        "encode_rate": packets / cap["encode_s"],
        "raw_parse_rate": parse_rate,
        "bridge_cpu_rate": cpu_rate,
        "replay_acked_s": replay_s,
        "replay_acked_rate": published / replay_s,
        "bridge_process_cpu_s": done["cpu_s"],
        "bridge_process_cpu_rate": published / max(done["cpu_s"], 1e-6),
        "timed_packets": timed,
        "end_to_end_s": end_to_end_s,
        "end_to_end_rate": stored_timed / end_to_end_s,
        "ratio_to_raw_parse": (stored_timed / end_to_end_s) / parse_rate,
        "ratio_bridge_cpu_to_raw_parse": cpu_rate / parse_rate,
        "stored": stored,
        "lost": packets - stored,
        "published": published + drones,
        "bad_packets": sum(b["bad_packets"] for b in bridge_stats),
        "publish_failed": sum(b["publisher"]["failed"] for b in bridge_stats),
        "kv_documents": kv_docs,
        "quarantined": quarantined,
        "workers": cfg.workers,
        "telemetry_worker": {
            k: stats["telemetry-worker"].get(k) for k in ("handled", "batches", "db_s", "kv_s")
        },
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "progress": progress,
        "bridge_progress": bridges.progress,
    }
    path = out_dir / f"mavlink-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    result["json_path"] = str(path)
    return result


def report(r: dict[str, Any]) -> str:
    """Human-readable summary of a result."""
    return "\n".join(
        [
            f"mavlink benchmark: {r['drones']} drones on {r['links']} links, {r['packets']} packets "
            f"({r['capture_bytes'] / 1e6:.1f} MB), {r['cpu_count']} cores, load {r['load_average'][0]:.1f}, "
            f"{r['workers']} telemetry worker processes",
            f"  pymavlink encode             : {r['encode_rate']:>10,.0f} packets/s",
            f"  ceiling: pymavlink raw parse : {r['raw_parse_rate']:>10,.0f} packets/s  (parse_buffer, best of 3)",
            f"  bridge CPU (no NATS)         : {r['bridge_cpu_rate']:>10,.0f} packets/s  "
            f"(parse + envelope + JSON; {r['ratio_bridge_cpu_to_raw_parse']:.2f} of raw parse)",
            f"  bridge -> JetStream acked    : {r['replay_acked_rate']:>10,.0f} packets/s  ({r['replay_acked_s']:.2f} s, "
            f"bridge process; its CPU {r['bridge_process_cpu_s']:.2f} s = {r['bridge_process_cpu_rate']:,.0f} packets per CPU s)",
            f"  end to end (history stored)  : {r['end_to_end_rate']:>10,.0f} packets/s  ({r['end_to_end_s']:.2f} s)",
            f"  ratio to raw parse           : {r['ratio_to_raw_parse']:>10.2f}",
            f"  stored {r['stored']} of {r['packets']}, lost {r['lost']}, bad packets {r['bad_packets']}, "
            f"publish failures {r['publish_failed']}, KV documents {r['kv_documents']}, quarantined {r['quarantined']}",
            f"  JSON: {r['json_path']}",
        ]
    )
