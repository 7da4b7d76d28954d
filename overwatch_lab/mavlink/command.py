"""``overwatch-lab mavlink``: the bridge from the shell (hooked into ``overwatch_lab.cli``).

::

    overwatch-lab mavlink --org org-a                                   # udp:127.0.0.1:14550, the lab in ./overwatch-data
    overwatch-lab mavlink --org org-a --listen udp:0.0.0.0:14550 --data-dir /srv/lab
    overwatch-lab mavlink --org org-a --nats-url nats://127.0.0.1:4222 --token T
    overwatch-lab mavlink --org org-a --replay flight.tlog              # a log instead of a live link
    overwatch-lab mavlink --org org-a --name 1=alpha --name 2=bravo     # entity ids by system id

Live: runs until Ctrl-C (a second one forces the exit), printing one status line to stderr
every ``--stats-every`` seconds and the counters as JSON on stdout at the end. Replay: bridges
the log as fast as the lab takes it, prints the counters and exits. Exit codes: 0 done; 1
something accepted was not acknowledged by JetStream; 2 bad arguments, no lab, or the broker
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from overwatch_lab.errors import ConfigError
from overwatch_lab.mavlink.bridge import DEFAULT_ENTITY_ID, DEFAULT_LISTEN, Bridge
from overwatch_lab.protocol.entities import ORG_TYPES
from overwatch_lab.stop_signals import StopSignals, exit_now


def _name(text: str) -> tuple[int, str]:
    sysid, sep, eid = text.partition("=")
    if not sep or not sysid.isdigit() or not 0 <= int(sysid) <= 255 or not eid:
        raise argparse.ArgumentTypeError(f"--name {text!r} must be SYSID=ENTITY_ID, e.g. 1=alpha")
    return int(sysid), eid


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``mavlink`` arguments to ``p``."""
    p.add_argument("--org", required=True, help="the organisation the vehicles belong to")
    p.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="udp:HOST:PORT",
        help="where autopilots, SITL or a GCS forward send MAVLink (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--replay", type=Path, metavar="FILE",
        help="bridge a telemetry log (.tlog) instead of listening, then exit",
    )  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir", metavar="DIR", type=Path, help="the running lab's data directory (reads its lab.json)"
    )
    where.add_argument("--nats-url", metavar="URL", help="NATS server URL of the lab")
    p.add_argument(
        "--token", metavar="T", help="NATS token (default: from lab.json or $OVERWATCH_LAB_NATS_TOKEN)"
    )
    p.add_argument(
        "--entity-id", default=DEFAULT_ENTITY_ID, metavar="TEMPLATE",
        help="entity id of a system id, with {org} and {sysid} (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--name", type=_name, action="append", default=[], metavar="SYSID=ENTITY_ID",
        help="the entity id of one system id (repeatable; overrides --entity-id)",
    )  # fmt: skip
    p.add_argument("--org-name", help="the organisation's name when the bridge registers it (default: --org)")
    p.add_argument("--org-type", default="civilian", choices=ORG_TYPES, help="(default: %(default)s)")
    p.add_argument(
        "--no-create-org", action="store_true",
        help="do not publish the organisation's created event (it exists; keep its name)",
    )  # fmt: skip
    p.add_argument(
        "--stats-every", type=float, default=10.0, metavar="S",
        help="a status line on stderr every S seconds; 0: none (default: %(default)g)",
    )  # fmt: skip


def _bridge(a: argparse.Namespace) -> Bridge:
    from simulators.cli import resolve_nats  # the same lab.json / --nats-url rules as `sim`

    url, auth = resolve_nats(a)
    return Bridge(
        url,
        auth=auth,
        org=a.org,
        listen=None if a.replay is not None else a.listen,
        entity_id=a.entity_id,
        names=dict(a.name),
        create_org=not a.no_create_org,
        org_name=a.org_name,
        org_type=a.org_type,
    )


def _line(st: dict[str, Any]) -> str:
    pub = st["publisher"]
    return (
        f"mavlink: {st['packets']} packets, {st['registered']} vehicles, {pub.get('acked', 0)} acked, "
        f"{sum(st['ignored'].values())} ignored, {st['bad_packets']} bad, {st['seq_lost']} lost by seq, "
        f"{pub.get('dropped_full', 0)} dropped (queue full)"
    )


def run(a: argparse.Namespace) -> int:
    """Run the bridge (``overwatch-lab mavlink``); see the module docstring."""
    if a.stats_every < 0:
        raise ConfigError(f"--stats-every must be >= 0, got {a.stats_every:g}")
    return asyncio.run(_run(a))


def _forced(sig: signal.Signals) -> None:
    print(f"received {sig.name} again; forcing exit", file=sys.stderr, flush=True)
    exit_now(128 + sig)


async def _run(a: argparse.Namespace) -> int:
    with StopSignals(on_force=_forced) as signals:
        bridge = _bridge(a)
        async with bridge:
            if a.replay is not None:
                replay = asyncio.create_task(bridge.replay(a.replay), name="mavlink-replay")
                stop = asyncio.create_task(signals.stop_requested.wait(), name="mavlink-stop")
                try:
                    await asyncio.wait({replay, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (replay, stop):
                        task.cancel()
                    await asyncio.gather(replay, stop, return_exceptions=True)
                if not replay.cancelled() and (exc := replay.exception()) is not None:
                    raise exc
            else:
                host, port = bridge.address
                print(f"overwatch-lab mavlink: org {a.org}, listening on udp:{host}:{port} (Ctrl-C to stop)",
                      file=sys.stderr, flush=True)  # fmt: skip
                while not signals.stop_requested.is_set():
                    try:
                        async with asyncio.timeout(a.stats_every or None):
                            await signals.stop_requested.wait()
                    except TimeoutError:
                        print(_line(bridge.stats()), file=sys.stderr, flush=True)
        st = bridge.stats()
    print(json.dumps(st, indent=2), flush=True)
    return 1 if st["publisher"].get("failed", 0) else 0


__all__ = ["add_arguments", "run"]
