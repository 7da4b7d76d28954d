"""``overwatch-lab sim SCENARIO``: fly a scenario against a lab (or any NATS) from the shell.

::

    overwatch-lab sim small-isr-patrol --data-dir ./overwatch-data --speed 2 --duration 300
    overwatch-lab sim my-fleet.yaml --nats-url nats://127.0.0.1:4222 --token s3cret
    overwatch-lab sim small-isr-patrol --credentials overwatch-data/credentials/relay-1.json
    overwatch-lab sim load-1000 --processes 2                        # the lab in $OVERWATCH_LAB_DATA_DIR
    overwatch-lab sim small-isr-patrol --dry-run --duration 60      # no NATS: counts and hash
    overwatch-lab sim --list                                        # the named scenarios

SCENARIO is a named scenario (``simulators.fleets``) or a ``.yaml``/``.toml`` file. Without
``--data-dir`` or ``--nats-url`` the lab in LabConfig's default data dir is used
(``$OVERWATCH_LAB_DATA_DIR``, else ``./overwatch-data``), as by every other command.

Who the devices connect as: ``overwatch-lab sim`` against a lab (no ``--nats-url``, ``--token``
or ``--credentials``) holds them to the device rights: the lab registers the fleet and issues one
relay per organisation (``lab.fleet.relays``), the fleet opens one connection per organisation
(per worker process) and the relays are revoked when the run ends. With ``--credentials FILE``
(a device or relay of ``overwatch-lab device``) every device of the scenario must be one of the
file's entities. ``python -m simulators.cli`` (no lab at hand) and ``--nats-url``/``--token``
connect with the identity given, or the lab's own from ``lab.json``. ``--lab`` is
a deprecated alias of ``--data-dir``. Progress goes to stderr once a second; Ctrl-C stops the run cleanly. Exit codes: 0 done,
1 broker or connection failure, 2 bad arguments or scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO, TypeAlias

from overwatch_lab.config import LabConfig, default_data_dir
from overwatch_lab.errors import BrokerError, ConfigError, OverwatchError, ScenarioError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.envelopes import format_timestamp, parse_timestamp
from simulators.catalog import list_scenarios, load_scenario
from simulators.dry_run import telemetry_hash
from simulators.registration import REGISTER_TIMEOUT_S, now_epoch_ms
from simulators.scenario import Scenario
from simulators.uplink import Uplink

log = logging.getLogger(__name__)

LAB_JSON = "lab.json"

FleetAuth: TypeAlias = "tuple[str, Mapping[str, NatsAuth]]"
"""A NATS URL and one identity per organisation (relays)."""
FleetRelays: TypeAlias = "Callable[[Path, Scenario], AbstractContextManager[FleetAuth | None]]"
"""Registers a scenario with the lab in a data dir and issues its relays while the context lasts
(None: the lab cannot issue identities); ``overwatch_lab.cli`` provides it."""


def build_parser(prog: str = "overwatch-lab sim") -> argparse.ArgumentParser:
    """Return the argument parser of the ``sim`` subcommand (also usable as a subparser template)."""
    p = argparse.ArgumentParser(prog=prog, description="Fly a simulated fleet against a lab over NATS.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``sim`` arguments to ``p`` (for hooking into ``overwatch_lab.cli``)."""
    p.add_argument(
        "scenario",
        metavar="SCENARIO",
        nargs="?",
        help="scenario name (e.g. small-isr-patrol; see --list) or .yaml/.toml file",
    )
    p.add_argument("--list", action="store_true", help="list the named scenarios and exit")
    where = p.add_mutually_exclusive_group()
    data_dir_help = {f.name: f for f in dataclasses.fields(LabConfig)}["data_dir"].metadata["help"]
    where.add_argument(
        "--data-dir", metavar="DIR", type=Path, help=f"the running lab's {data_dir_help}; reads its lab.json"
    )
    where.add_argument("--lab", type=Path, dest="lab_deprecated", help=argparse.SUPPRESS)  # old --data-dir
    where.add_argument("--nats-url", metavar="URL", help="NATS server URL")
    p.add_argument(
        "--token", metavar="T", help="NATS token (default: from lab.json or $OVERWATCH_LAB_NATS_TOKEN)"
    )
    p.add_argument(
        "--credentials", metavar="FILE", type=Path,
        help="a connection file from `overwatch-lab device add` or a relay (default: the lab's own identity from lab.json)",
    )  # fmt: skip
    p.add_argument(
        "--speed",
        metavar="X",
        type=float,
        default=1.0,
        help="simulated seconds per second (default %(default)g)",
    )
    p.add_argument("--seed", metavar="N", type=int, help="override the scenario's seed")
    p.add_argument(
        "--duration", metavar="S", type=float, help="simulated seconds to run (default: the scenario's)"
    )
    p.add_argument(
        "--start",
        metavar="TIME",
        help="scenario start: RFC 3339 time, epoch seconds or 'now' (default: the scenario's, else now)",
    )
    p.add_argument(
        "--processes", metavar="N", type=int, default=1, help="worker processes (default %(default)s)"
    )
    p.add_argument(
        "--register-timeout",
        metavar="S",
        type=float,
        default=REGISTER_TIMEOUT_S,
        help=f"wait up to S seconds for the lab to register the fleet (default {REGISTER_TIMEOUT_S:g}; 0 = no wait)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="no NATS: run the model, print counts and the content hash"
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")


def resolve_nats(args: argparse.Namespace) -> tuple[str, NatsAuth]:
    """Return (url, credentials) from ``--nats-url``/``--token``/``--credentials`` or a lab's ``lab.json``.

    Raises:
        ConfigError: no URL given and no readable ``lab.json``, or an unreadable credentials file.
    """
    token = args.token or os.environ.get("OVERWATCH_LAB_NATS_TOKEN")
    creds_file = getattr(args, "credentials", None)
    chosen = NatsAuth.load(creds_file) if creds_file is not None else NatsAuth(token=token) if token else None
    if args.nats_url:
        return args.nats_url, chosen or NatsAuth()
    data_dir = getattr(args, "data_dir", None) or default_data_dir()
    path = Path(data_dir).expanduser() / LAB_JSON
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no running lab: {path} does not exist (start one with `overwatch-lab up`, or pass --nats-url)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    url = info.get("nats_url")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{path} has no nats_url")
    if chosen is not None:
        return url, chosen
    if info.get("nats_auth"):
        return url, NatsAuth.from_dict(info["nats_auth"], f"{path} nats_auth")
    return url, NatsAuth(token=info.get("nats_token"))


def uses_lab_identity(args: argparse.Namespace) -> bool:
    """True when no URL, token or credentials file was given: the devices would speak as the lab."""
    token = args.token or os.environ.get("OVERWATCH_LAB_NATS_TOKEN")
    return not (args.nats_url or token or getattr(args, "credentials", None))


def scoped_orgs(args: argparse.Namespace, sc: Scenario, auth: NatsAuth) -> Mapping[str, NatsAuth] | None:
    """With a device or relay connection file: ``{its org: auth}`` (else None, one identity for all).

    Raises:
        ConfigError: the scenario has devices the file does not speak for.
    """
    creds_file = getattr(args, "credentials", None)
    if creds_file is None:
        return None
    try:
        info = json.loads(Path(creds_file).expanduser().read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the credentials file {creds_file}: {exc}") from None
    if not isinstance(info, dict) or info.get("role") not in ("device", "relay"):
        return None
    org, allowed = str(info.get("org_id")), set(info.get("entities") or ())
    foreign = [eid for eid, _fleet, o, _kind in sc.devices() if o != org or eid not in allowed]
    if foreign:
        raise ConfigError(
            f"{creds_file} speaks for {sorted(allowed)} of {org!r} only; the scenario also has "
            f"{len(foreign)} other devices (e.g. {foreign[:3]}): issue a relay for them "
            "(`overwatch-lab device relay`) or run against the lab without --credentials"
        )
    return {org: auth}


def _start(value: str | None) -> float | None:
    if value is None:
        return None  # the scenario's start, else now
    if value == "now":
        return now_epoch_ms()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_timestamp(value, "--start")[1]
    except OverwatchError as exc:
        raise ScenarioError(str(exc)) from None


class ProgressLine:
    """A one-line progress display on a stream (rewritten in place on a terminal)."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self._last = 0.0

    def __call__(self, s: dict[str, Any]) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        final = s.get("state") in ("finished", "stopped", "failed")
        if not self.tty and not final and now - self._last < 5.0:
            return
        self._last = now
        telemetry = sum(v for k, v in s.get("by_type", {}).items() if k.isupper())
        line = (
            f"{s['scenario']} t={s['sim_time_s']:8.1f}s x{s['speed']:g} devices={s['devices']} "
            f"msgs={s['messages']:,} ({s['msgs_per_s']:,.0f}/s) telemetry={telemetry:,} lag={s['lag_s']:.2f}s "
            f"[{s['state']}]"
        )
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def format_scenario_list() -> str:
    """Return the named scenarios, one per line: name and description (what ``sim --list`` prints)."""
    named = list_scenarios()
    width = max(map(len, named))
    return "".join(f"{name:<{width}}  {description}\n" for name, description in named.items())


def _dry_run(sc: Scenario, duration: float, start: float | None, out: TextIO) -> int:
    from simulators.model import FleetModel

    t0 = time.perf_counter()
    model = FleetModel(sc, start_epoch_s=start)
    digest = telemetry_hash(sc, duration, start_epoch_s=model.clock.start_epoch_s)
    n = sum(1 for _ in model.run_dry(duration))
    wall = time.perf_counter() - t0
    report = {
        "scenario": sc.name,
        "seed": sc.seed,
        "start": format_timestamp(model.clock.start_epoch_s),
        "devices": sc.device_count,
        "sim_time_s": duration,
        "messages": n,
        "by_type": dict(model.counts),
        "link": model.link_stats(),
        "sha256": digest,
        "wall_s": round(wall, 3),
    }
    out.write(json.dumps(report, indent=2) + "\n")
    return 0


async def _live(sc: Scenario, args: argparse.Namespace, start: float | None, fleet: FleetAuth | None = None) -> int:
    if fleet is not None:
        url, by_org = fleet
        auth: NatsAuth | Mapping[str, NatsAuth] = by_org
    else:
        url, one = resolve_nats(args)
        auth = scoped_orgs(args, sc, one) or one
    registered = fleet is not None  # the lab registered the fleet before it issued the relays
    progress = ProgressLine(sys.stderr, args.quiet)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    uplink = None
    if args.processes > 1:
        from simulators.multiproc import run_scenario_processes

        handle: Any = await run_scenario_processes(
            sc,
            url,
            auth=auth,
            processes=args.processes,
            speed=args.speed,
            duration_s=args.duration,
            start_epoch_s=start,
            progress=progress,
            register_timeout_s=args.register_timeout or None,
            registered=registered,
        )
    else:
        from simulators.runner import run_scenario

        uplink = await _connect(url, auth, sc.name)
        try:
            handle = await run_scenario(
                sc,
                uplink,
                speed=args.speed,
                duration_s=args.duration,
                start_epoch_s=start,
                progress=progress,
                register_timeout_s=args.register_timeout or None,
                registered=registered,
            )
        except BaseException:
            await uplink.drain()
            raise
    try:
        waiter = asyncio.ensure_future(handle.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not waiter.done():
            final = await handle.stop()
            waiter.cancel()
        else:
            final = waiter.result()
            await handle.stop()
    finally:
        if uplink is not None:
            await uplink.drain()
    if final.get("state") == "failed":
        return 1
    return 0


async def _connect(url: str, auth: NatsAuth | Mapping[str, NatsAuth], name: str) -> Uplink:
    """One connection, or one per organisation (each with its relay)."""
    from overwatch_lab.broker.connect import connect

    if isinstance(auth, NatsAuth):
        return Uplink.single(await connect(url, auth=auth, name=f"overwatch-lab-sim:{name}"))
    by_org: dict[str, Any] = {}
    try:
        for org, one in auth.items():
            by_org[org] = await connect(url, auth=one, name=f"overwatch-lab-sim:{name}:{org}")
    except BaseException:
        if by_org:
            await Uplink(by_org=by_org).drain()
        raise
    return Uplink(by_org=by_org)


@contextlib.contextmanager
def _no_relays() -> Iterator[None]:
    yield None


def main(argv: list[str] | None = None) -> int:
    """Run ``overwatch-lab sim``; return the exit code."""
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace, relays: FleetRelays | None = None) -> int:
    """Run the ``sim`` subcommand from parsed arguments (see :func:`add_arguments`).

    ``relays`` (``overwatch_lab.cli`` passes it) holds the fleet to the device rights when it
    runs against a lab without an identity of its own (see the module docstring).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.list:
        sys.stdout.write(format_scenario_list())
        return 0
    if getattr(args, "lab_deprecated", None) is not None:
        sys.stderr.write("overwatch-lab sim: --lab is deprecated; use --data-dir (as every other command)\n")
        if args.data_dir is None:
            args.data_dir = args.lab_deprecated
    try:
        if args.scenario is None:
            raise ScenarioError("give a SCENARIO (a name or a .yaml/.toml file); --list shows the named ones")
        sc = load_scenario(args.scenario)
        if args.seed is not None:
            sc = sc.replace(seed=args.seed)
        if not 0 <= args.speed < math.inf or (args.processes > 1 and args.speed == 0):  # nan too
            raise ScenarioError(f"--speed must be > 0 and finite, got {args.speed}")
        if args.duration is not None and not 0 < args.duration < math.inf:
            raise ScenarioError(f"--duration must be > 0 and finite, got {args.duration}")
        start = _start(args.start)
        if args.dry_run:
            duration = args.duration or sc.duration_s
            if duration is None:
                raise ScenarioError("--dry-run needs --duration (the scenario has no duration_s)")
            return _dry_run(sc, duration, start, sys.stdout)
        data_dir = Path(getattr(args, "data_dir", None) or default_data_dir()).expanduser()
        scoped = relays is not None and uses_lab_identity(args)
        with relays(data_dir, sc) if relays is not None and scoped else _no_relays() as fleet:
            return asyncio.run(_live(sc, args, start, fleet))
    except (ScenarioError, ConfigError) as exc:
        sys.stderr.write(f"overwatch-lab sim: {exc}\n")
        return 2
    except BrokerError as exc:
        sys.stderr.write(f"overwatch-lab sim: {exc}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
