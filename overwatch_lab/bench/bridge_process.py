"""A separate process that runs the MAVLink bridges of ``overwatch-lab bench mavlink``.

The bridges run here, not in the lab's process, as a real bridge would (``overwatch-lab
mavlink`` is its own process too): they share no GIL with the lab. One process holds one
:class:`~overwatch_lab.mavlink.Bridge` per link (``--link REGISTRATION.tlog LOG.tlog``, entity
ids ``{org}-l{n}-mav{sysid}``), all on one event loop. The parent talks to it by lines:

- stdout ``{"ready": {...}}``: the registration logs (one HEARTBEAT per drone) are replayed and
  acknowledged by JetStream and every vehicle's command link is up;
- stdin ``go``: replay the timed logs, all links at once, as fast as JetStream acknowledges them
  (stdin closed instead: exit without replaying);
- stdout ``{"progress": {"t": s, "read": packets, "acked": acked}}`` every ``PROGRESS_EVERY_S``;
- stdout ``{"done": {"started_at", "ended_at", "read", "bridges": [stats...]}}`` once every
  packet is acknowledged (wall-clock times, as the parent's).

Credentials come from the environment (:data:`~overwatch_lab.nats_auth.AUTH_ENV`), as for
:mod:`overwatch_lab.bench.publisher`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from overwatch_lab.mavlink import Bridge
from overwatch_lab.nats_auth import NatsAuth

PROGRESS_EVERY_S = 1.0
LINKS_UP_TIMEOUT_S = 120.0  # s for every vehicle's command link to subscribe after registration
_STATS_KEPT = (
    "packets",
    "published",
    "registered",
    "bad_packets",
    "no_heartbeat",
    "errors",
    "publisher",
    "tlog",
)


def argv(url: str, org: str, links: list[tuple[Path, Path]]) -> list[str]:
    """The command line of this process for ``links`` (registration log, timed log) pairs."""
    out = [sys.executable, "-m", "overwatch_lab.bench.bridge_process", "--url", url, "--org", org]
    for registration, log in links:
        out += ["--link", str(registration), str(log)]
    return out


def _emit(**line: Any) -> None:
    print(json.dumps(line), flush=True)


def _stats(b: Bridge) -> dict[str, Any]:
    st = b.stats()
    return {k: st[k] for k in _STATS_KEPT}


def _acked(bridges: list[Bridge]) -> int:
    return sum(b.acked for b in bridges)


async def _progress(bridges: list[Bridge], started: float, read0: int, acked0: int) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        read = sum(b.tlog.records for b in bridges) - read0
        _emit(
            progress={"t": round(time.time() - started, 2), "read": read, "acked": _acked(bridges) - acked0}
        )


async def run(url: str, auth: NatsAuth, org: str, links: list[tuple[Path, Path]]) -> int:
    """Run the bridges through both phases (see the module docstring); return the exit code."""
    bridges = [
        Bridge(
            url, auth=auth, org=org, listen=None, entity_id=f"{{org}}-l{n}-mav{{sysid}}", create_org=(n == 0)
        )
        for n in range(len(links))
    ]
    async with contextlib.AsyncExitStack() as stack:
        for b in bridges:
            await stack.enter_async_context(b)
        await asyncio.gather(*(b.replay(reg) for b, (reg, _) in zip(bridges, links, strict=True)))
        async with asyncio.timeout(LINKS_UP_TIMEOUT_S):
            await asyncio.gather(*(b.links_started() for b in bridges))
        read0, acked0 = sum(b.tlog.records for b in bridges), _acked(bridges)  # progress: the timed logs only
        _emit(ready={"vehicles": sum(len(b.vehicles) for b in bridges), "acked": acked0})
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            return 1  # the parent went away (or said something else): stop without replaying
        started, cpu0 = time.time(), time.process_time()
        progress = asyncio.create_task(
            _progress(bridges, started, read0, acked0), name="bench-bridges-progress"
        )
        try:
            read = await asyncio.gather(*(b.replay(log) for b, (_, log) in zip(bridges, links, strict=True)))
            ended, cpu_s = time.time(), time.process_time() - cpu0
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        _emit(done={"started_at": started, "ended_at": ended, "read": sum(read), "cpu_s": cpu_s,
                    "bridges": [_stats(b) for b in bridges]})  # fmt: skip
    return 0


def main(args: list[str] | None = None) -> int:
    """Entry point: ``python -m overwatch_lab.bench.bridge_process --url U --org O --link REG LOG ...``."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--org", required=True)
    p.add_argument(
        "--link", nargs=2, type=Path, action="append", required=True, metavar=("REGISTRATION", "LOG")
    )
    a = p.parse_args(args)
    return asyncio.run(run(a.url, NatsAuth.from_env(), a.org, [(r, lg) for r, lg in a.link]))


if __name__ == "__main__":
    raise SystemExit(main())
