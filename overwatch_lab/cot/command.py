"""``overwatch-lab cot``: send a running lab's fleet to TAK clients until Ctrl-C (hooked into ``overwatch_lab.cli``).

::

    overwatch-lab cot --to udp://239.2.3.1:6969                 # TAK's SA multicast group (TTL 1)
    overwatch-lab cot --to udp://192.168.1.20:4242 --rate 2     # one ATAK/WinTAK device
    overwatch-lab cot --to tcp://takserver:8087 --affiliation org-red=hostile
    overwatch-lab cot --data-dir ./run1 --to ...                # the lab running in ./run1

It attaches to the lab running in ``--data-dir`` (its ``lab.json``, as ``status`` and
``dashboard`` do). Exit 0 after Ctrl-C/SIGTERM (a second one forces the exit), 2 when no lab
runs there or a value is bad.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from overwatch_lab.config import default_data_dir
from overwatch_lab.cot.events import AFFILIATIONS, affiliation_letter
from overwatch_lab.cot.pacing import MAX_EVENTS_PER_S, RATE_HZ, Pacer
from overwatch_lab.cot.transport import parse_target
from overwatch_lab.stop_signals import StopSignals, exit_now


def _org_affiliation(text: str) -> tuple[str, str]:
    org, sep, aff = text.partition("=")
    if not sep or not org or not aff:
        raise argparse.ArgumentTypeError(f"{text!r} must be ORG=AFFILIATION, e.g. org-red=hostile")
    return org, aff


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``cot`` arguments to ``p``."""
    p.add_argument("--to", required=True, metavar="URL",
                   help="udp://HOST:PORT (unicast or multicast, e.g. udp://239.2.3.1:6969) or "
                   "tcp://HOST:PORT (a TAK server's plain TCP input, e.g. tcp://takserver:8087)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="the running lab's data directory (default: $OVERWATCH_LAB_DATA_DIR, else ./overwatch-data)")  # fmt: skip
    p.add_argument("--rate", type=float, default=RATE_HZ, metavar="HZ",
                   help="events per second per entity, at most (default: %(default)g)")  # fmt: skip
    p.add_argument("--max-rate", type=float, default=MAX_EVENTS_PER_S, metavar="N",
                   help="events per second for the whole fleet, at most (default: %(default)g)")  # fmt: skip
    p.add_argument("--stale-after", type=float, metavar="S",
                   help="seconds a TAK client keeps an entity fresh (default: the lab's --stale-after)")  # fmt: skip
    p.add_argument("--affiliation", type=_org_affiliation, action="append", default=[], metavar="ORG=AFF",
                   help=f"an organisation's affiliation, one of {', '.join(AFFILIATIONS)}; repeatable")  # fmt: skip
    p.add_argument("--default-affiliation", default="friendly", metavar="AFF",
                   help="affiliation of the organisations not given (default: %(default)s)")  # fmt: skip
    p.add_argument("--group", default="Cyan", help="TAK team colour of every entity (default: %(default)s)")
    p.add_argument("--role", default="Team Member", help="TAK role of every entity (default: %(default)s)")
    p.add_argument("--multicast-ttl", type=int, default=1, metavar="N",
                   help="TTL of multicast datagrams (default: %(default)s: this link only)")  # fmt: skip
    p.add_argument("--multicast-interface", metavar="ADDR",
                   help="IPv4 address of the interface multicast leaves by (default: the system's choice)")  # fmt: skip


def _check(a: argparse.Namespace) -> None:
    """Every value the sender will refuse, refused now.

    Raises:
        ConfigError: the first bad one.
    """
    parse_target(a.to)
    Pacer(a.rate, a.max_rate)
    for _, affiliation in a.affiliation:
        affiliation_letter(affiliation)
    affiliation_letter(a.default_affiliation)


def run(a: argparse.Namespace) -> int:
    """Attach to the lab and send its fleet as CoT until SIGINT/SIGTERM."""
    return asyncio.run(_run(a))


async def _run(a: argparse.Namespace) -> int:
    from overwatch_lab.cot.sender import CotSender
    from overwatch_lab.lab import Lab

    def forced(sig: Any) -> None:
        print(f"received {sig.name} again; forcing exit", file=sys.stderr, flush=True)
        exit_now(128 + sig)

    with StopSignals(on_force=forced) as signals:
        _check(a)  # before attaching: a bad value is one line, at once
        data_dir = a.data_dir if a.data_dir is not None else default_data_dir()
        lab = await asyncio.to_thread(Lab.attach, data_dir)  # ConfigError (one line) when no lab runs there
        try:
            sender = CotSender(
                lab,
                a.to,
                rate_hz=a.rate,
                max_events_per_s=a.max_rate,
                stale_after_s=a.stale_after,
                affiliations=dict(a.affiliation),
                default_affiliation=a.default_affiliation,
                group=a.group,
                role=a.role,
                multicast_ttl=a.multicast_ttl,
                multicast_interface=a.multicast_interface,
            ).start()
            sender.ended().add_done_callback(lambda _f: signals.request_stop())
            try:
                print(
                    f"CoT: sending the lab in {data_dir} to {sender.target}, at most {a.rate:g}/s per entity "
                    f"and {a.max_rate:g}/s in all, stale after {sender.stale_after_s:g} s (Ctrl-C to stop)",
                    flush=True,
                )
                await signals.stop_requested.wait()
            finally:
                await asyncio.to_thread(sender.stop)
        finally:
            await asyncio.to_thread(lab.down)
    print(f"CoT: stopped; {json.dumps(sender.stats())}", flush=True)
    if sender.failure is not None:
        print(f"error: the CoT sender failed: {sender.failure!r}", file=sys.stderr, flush=True)
        return 1
    return 0
