"""``overwatch-lab bench commands``: command delivery and acknowledgement, stage by stage.

A lab (embedded broker, libSQL file) and a separate *device process* running one
:class:`~simulators.command_link.CommandLink` per simulated device (accept at once, succeed at
once: the figures measure the fabric, not a device). The run:

1. **burst**: ``commands`` commands (goto, round-robin over the devices) published at once with
   pipelined JetStream acks; measured from the first publish until every command is final.
   Per-stage latency p50/p99 (issued→queued→sent→received→accepted→executing→done) comes from
   the stage times libSQL recorded; throughput = commands / (last done − first issued).
2. **sequential**: ``sequential`` commands one at a time through the Python API
   (``lab.commands.send`` + ``wait``): the unloaded end-to-end round trip.
3. **ceiling**, same run, same broker, same device process: raw nats-py request/reply to the
   devices (each device answers on ``bench.rr.{entity}``), concurrently (throughput) and one at a
   time (round trip). A command needs one JetStream publish in, a libSQL commit per batch, one
   core publish out and four JetStream acks back, so it cannot beat a bare request/reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from overwatch_lab.bench.plot import stage_latency_figure, write_html
from overwatch_lab.config import LabConfig
from overwatch_lab.lab import Lab
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.commands import make_command
from overwatch_lab.protocol.envelopes import encode
from overwatch_lab.protocol.subjects import command_subject

ORG = "bench-cmd-org"
STAGES = ("issued", "queued", "sent", "received", "accepted", "executing", "done")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pct(values: pd.Series | np.ndarray | list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan"), "n": 0}
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
        "n": int(arr.size),
    }


# ------------------------------------------------------------------------------ device process


async def _devices_main(url: str, auth: NatsAuth, org: str, entities: list[str]) -> None:
    """Run one CommandLink per entity plus a raw request/reply responder each, until stdin closes."""
    import nats

    from simulators import CommandResult
    from simulators.command_link import CommandLink

    nc = await nats.connect(url, **auth.kwargs(), pending_size=64 * 1024 * 1024)
    links = [
        CommandLink(
            nc, org, eid, lambda cmd: CommandResult(cmd["command_id"], True, behaviour=cmd["command_type"])
        )
        for eid in entities
    ]
    for link in links:
        await link.start()

    async def reply(msg: Any) -> None:
        await nc.publish(msg.reply, msg.data)

    for eid in entities:
        await nc.subscribe(f"bench.rr.{eid}", cb=reply)
    await nc.flush()
    print(json.dumps({"ready": len(links)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    for link in links:
        await link.stop()
    stats: dict[str, int] = {}
    for link in links:
        for k, v in link.stats.snapshot().items():
            stats[k] = stats.get(k, 0) + v
    print(json.dumps(stats), flush=True)
    await nc.close()


# ------------------------------------------------------------------------------ ceiling


async def _ceiling(
    url: str, auth: NatsAuth, entities: list[str], n: int, sequential: int
) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url, **auth.kwargs(), pending_size=64 * 1024 * 1024)
    payload = encode(make_command(ORG, entities[0], "goto", {"lat": 1.0, "lon": 2.0}))
    for eid in entities:  # warm up every route
        await nc.request(f"bench.rr.{eid}", payload, timeout=5)

    async def one(i: int) -> float:
        t = time.perf_counter()
        await nc.request(f"bench.rr.{entities[i % len(entities)]}", payload, timeout=10)
        return (time.perf_counter() - t) * 1000.0

    started = time.perf_counter()
    rtts = await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    seq = [await one(i) for i in range(sequential)]
    await nc.close()
    return {
        "concurrent_rate": n / elapsed,
        "concurrent_rtt": _pct(rtts),
        "sequential_rtt": _pct(seq),
    }


# ------------------------------------------------------------------------------ run


def run(
    *,
    devices: int = 100,
    commands: int = 1000,
    sequential: int = 50,
    out_dir: Path,
    sync_interval: str = "2m",
    timeout_s: float = 300,
) -> dict[str, Any]:
    """Run the benchmark and return the result dict (also written as JSON to ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entities = [f"dev-{k:04d}" for k in range(devices)]
    with tempfile.TemporaryDirectory(prefix="overwatch-bench-cmd-") as tmp:
        cfg = LabConfig(data_dir=Path(tmp), sync_interval=sync_interval)
        _log(f"booting lab in {tmp} (sync_interval={sync_interval})")
        with Lab(cfg) as lab:
            lab.register_org(ORG, "Command bench org")
            lab.register_entities(
                [{"org_id": ORG, "entity_id": e, "entity_type": "aircraft_multirotor"} for e in entities],
                timeout=120,
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "overwatch_lab.bench.commands", "devices", "--url", lab.nats_url,
                 "--org", ORG, *entities],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=lab.nats_auth.env(),
            )  # fmt: skip
            try:
                assert proc.stdin is not None and proc.stdout is not None
                ready = json.loads(proc.stdout.readline())
                _log(f"device process ready: {ready['ready']} command links; bursting {commands} commands")
                burst = _burst(lab, entities, commands, timeout_s)
                _log(f"sequential: {sequential} commands one at a time through the Python API")
                seq = _sequential(lab, entities, sequential)
                _log("measuring the raw nats-py request/reply ceiling against the same device process")
                ceiling = asyncio.run(_ceiling(lab.nats_url, lab.nats_auth, entities, commands, sequential))
                stats = lab.stats()
                proc.stdin.close()
                device_stats = json.loads(proc.stdout.readline())
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None and not pipe.closed:
                        pipe.close()
    result = {
        "benchmark": "commands",
        "devices": devices,
        "commands": commands,
        "sync_interval": sync_interval,
        **burst,
        "sequential": seq,
        "ceiling": ceiling,
        "ratio_to_raw_request_reply": burst["throughput_cmd_s"] / ceiling["concurrent_rate"],
        "lab_commands": stats["commands"],
        "command_worker_batches": stats["command-worker"]["batches"],
        "ack_worker_batches": stats["command-ack-worker"]["batches"],
        "devices_stats": device_stats,
        "cpu_count": os.cpu_count(),
    }
    path = out_dir / f"commands-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    result["json_path"] = str(path)
    title = (
        f"commands: {commands} to {devices} devices, {result['throughput_cmd_s']:.0f} cmd/s "
        f"(raw request/reply ceiling {ceiling['concurrent_rate']:.0f} req/s)"
    )
    result["plot_path"] = str(
        write_html(stage_latency_figure(result["stages"], title), path.with_suffix(".html"), title)
    )
    return result


def _burst(lab: Lab, entities: list[str], n: int, timeout_s: float) -> dict[str, Any]:
    issued = time.time()
    items = []
    for i in range(n):
        eid = entities[i % len(entities)]
        env = make_command(ORG, eid, "goto", {"lat": 32.9 + i * 1e-5, "lon": -96.8, "alt_m": 40.0},
                           command_id=f"burst-{i:05d}", issued_at=issued, ttl_s=120)  # fmt: skip
        items.append((command_subject(ORG, eid), encode(env), env["command_id"]))
    lab.publish_many(items)
    published = time.time()

    def finished() -> bool:
        st = lab.stats()["commands"]
        return bool(st["queued"] + st["rejected_by_lab"] >= n and st["open"] == 0)

    lab.wait_for(finished, timeout=timeout_s, interval=0.01, what=f"{n} commands final")
    frame = lab.frames.commands()
    frame = frame[frame["command_id"].str.startswith("burst-")]
    ts = {s: frame[f"{s}_at"].astype("int64") / 1e9 for s in STAGES[1:]}
    ts["issued"] = pd.Series(issued, index=frame.index)
    stages = {f"{a}_to_{b}": _pct((ts[b] - ts[a]) * 1000.0) for a, b in zip(STAGES, STAGES[1:], strict=False)}
    stages["issued_to_done"] = _pct((ts["done"] - ts["issued"]) * 1000.0)
    span = float(ts["done"].max()) - issued
    return {
        "publish_s": published - issued,
        "burst_s": span,
        "throughput_cmd_s": n / span,
        "succeeded": int((frame["status"] == "SUCCEEDED").sum()),
        "not_succeeded": int((frame["status"] != "SUCCEEDED").sum()),
        "attempts_max": int(frame["attempts"].max()),
        "stages": stages,
    }


def _sequential(lab: Lab, entities: list[str], n: int) -> dict[str, Any]:
    rtts = []
    for i in range(n):
        t = time.perf_counter()
        lab.commands.send(entities[i % len(entities)], "set_speed", speed_mps=5.0).wait(
            "SUCCEEDED", timeout=30
        )
        rtts.append((time.perf_counter() - t) * 1000.0)
    return {"api_round_trip": _pct(rtts)}


def report(r: dict[str, Any]) -> str:
    """Human-readable summary of a result."""
    lines = [
        f"commands benchmark: {r['commands']} commands to {r['devices']} devices (separate process), "
        f"sync_interval={r['sync_interval']}, {r['cpu_count']} cores",
        f"  burst: {r['throughput_cmd_s']:.0f} commands/s end to end ({r['burst_s']:.2f} s; publish "
        f"{r['publish_s'] * 1000:.0f} ms), {r['succeeded']} SUCCEEDED, {r['not_succeeded']} other, "
        f"max attempts {r['attempts_max']}",
        f"  {'stage':<24}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
    ]
    for name, p in r["stages"].items():
        lines.append(f"  {name:<24}{p['p50_ms']:>10.1f}{p['p99_ms']:>10.1f}{p['max_ms']:>10.1f}")
    seq, ceil = r["sequential"]["api_round_trip"], r["ceiling"]
    lines += [
        f"  sequential API round trip (commands.send + wait SUCCEEDED): p50 {seq['p50_ms']:.1f} ms, "
        f"p99 {seq['p99_ms']:.1f} ms",
        f"  ceiling: raw nats-py request/reply: {ceil['concurrent_rate']:.0f} req/s concurrent "
        f"(rtt p50 {ceil['concurrent_rtt']['p50_ms']:.1f} / p99 {ceil['concurrent_rtt']['p99_ms']:.1f} ms); "
        f"one at a time p50 {ceil['sequential_rtt']['p50_ms']:.2f} ms",
        f"  ratio commands/s : raw req/s = {r['ratio_to_raw_request_reply']:.3f}",
        f"  device process: {r['devices_stats']['executed']} executed, {r['devices_stats']['duplicates']} "
        f"duplicate deliveries, {r['devices_stats']['acks_sent']} acks",
        f"  JSON: {r['json_path']}",
        f"  plot: {r['plot_path']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the device process (``python -m overwatch_lab.bench.commands devices ...``)."""
    p = argparse.ArgumentParser(prog="overwatch_lab.bench.commands")
    sub = p.add_subparsers(dest="role", required=True)
    d = sub.add_parser("devices")
    d.add_argument("--url", required=True)
    d.add_argument("--org", required=True)
    d.add_argument("entities", nargs="+")
    a = p.parse_args(argv)
    asyncio.run(_devices_main(a.url, NatsAuth.from_env(), a.org, a.entities))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
