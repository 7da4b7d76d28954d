"""``overwatch-lab`` command line: up | status | command | bench | sim.

Only this entry point installs signal handlers (``stop_signals.py``); a Lab never does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overwatch_lab.config import LabConfig
from overwatch_lab.errors import LabStateError, OverwatchError
from overwatch_lab.stop_signals import StopSignals, arm_early, exit_now
from simulators import cli as simulators_cli

if TYPE_CHECKING:
    from overwatch_lab.dashboard.server import DashboardServer
    from overwatch_lab.lab import Lab


def _lab_config(a: argparse.Namespace) -> LabConfig:
    kwargs: dict[str, Any] = {"data_dir": Path(a.data_dir)}
    if a.nats_url:
        kwargs["nats_url"] = a.nats_url
    for name in ("nats_token", "nats_user", "nats_password", "nats_creds", "db_url", "sync_interval"):
        value = getattr(a, name, None)
        if value:
            kwargs[name] = value
    if a.stale_after is not None:
        kwargs["stale_after_s"] = a.stale_after
    if getattr(a, "history_max_age", None) is not None:
        kwargs["history_max_age_s"] = a.history_max_age
    return LabConfig(**kwargs)


def _stopping(sig: signal.Signals) -> None:
    print(f"received {sig.name}; stopping (again to force)", flush=True)


def _forced(sig: signal.Signals, lab: Lab | None = None) -> None:
    print(f"received {sig.name} again; forcing exit", file=sys.stderr, flush=True)
    exit_now(128 + sig, lab.abort if lab is not None else None)


def cmd_up(a: argparse.Namespace) -> int:
    """Run a lab in the foreground until SIGINT/SIGTERM, or until it fails on its own.

    Exit status: 0 after a clean stop on a signal (also one that came while the lab started);
    2 when the lab cannot start (e.g. DataDirInUse: another lab owns the data directory) or
    fails on its own while running (e.g. BrokerExited); 128 + n when a second signal n forced
    the exit (the broker child is killed first). A signal outside the handlers' lifetime
    (interpreter start-up and imports, before the command runs, or interpreter exit after the
    clean stop: nothing runs then) ends it the way Python does by default.
    """
    arm_early()
    return asyncio.run(_up(a))


async def _up(a: argparse.Namespace) -> int:
    from overwatch_lab.lab import Lab

    lab: Lab | None = None  # read by the force handler when it runs
    with StopSignals(on_first=_stopping, on_force=lambda sig: _forced(sig, lab)) as signals:
        cfg = _lab_config(a)
        lab = Lab(cfg)
        print(f"overwatch-lab: starting in {cfg.data_dir}", flush=True)
        await lab.start()  # a first signal meanwhile: stop once started; a second: forced exit
        lab.ended().add_done_callback(lambda _ended: signals.request_stop())
        server = None
        try:
            if not signals.stop_requested.is_set():
                server = await asyncio.to_thread(_show_and_serve, lab, a)
            await signals.stop_requested.wait()
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)
            await lab.stop()
    if signals.first is None:  # nobody asked it to stop: the lab ended on its own
        if isinstance(lab.failure, OverwatchError):
            raise lab.failure
        raise LabStateError(f"the lab stopped on its own ({lab.failure!r})") from lab.failure
    print("stopped cleanly", flush=True)
    return 0


def _show_and_serve(lab: Lab, a: argparse.Namespace) -> DashboardServer | None:
    """Print where the running lab is, start its fleet and dashboard (blocking: runs in a thread)."""
    cfg = lab.config
    info = lab.connection_info()
    print("overwatch-lab is up")
    for key in ("data_dir", "nats_url", "monitor_url", "db_url", "pid"):
        print(f"  {key:<12} {info[key]}")
    print(f"  {'attach':<12} Lab.attach({str(cfg.data_dir)!r})  (token in {cfg.data_dir / 'lab.json'})")
    if a.fleet != "none":
        sim = lab.fleet.simulate(a.fleet, speed=a.speed)
        sc = sim.scenario
        print(f"  {'fleet':<12} {sc.name}: {len(sc.devices())} devices, seed {sc.seed}, speed {a.speed:g}")
    server = None
    if not a.no_dashboard:
        from overwatch_lab.dashboard import serve

        server = serve(lab, port=a.dashboard_port, address=a.dashboard_address)
        print(f"  {'dashboard':<12} {server.url}")
    print("Ctrl-C to stop.", flush=True)
    return server


def cmd_dashboard(a: argparse.Namespace) -> int:
    """Serve the dashboard of a lab running in another process until SIGINT/SIGTERM."""
    arm_early()
    return asyncio.run(_dashboard(a))


async def _dashboard(a: argparse.Namespace) -> int:
    from overwatch_lab.dashboard import AttachedLab, serve

    with StopSignals(on_force=_forced) as signals:
        source = AttachedLab(a.data_dir)
        try:
            server = await asyncio.to_thread(
                serve, source, port=a.dashboard_port, address=a.dashboard_address, show=a.show
            )
            try:
                print(f"dashboard at {server.url}  (Ctrl-C to stop)", flush=True)
                await signals.stop_requested.wait()
            finally:
                await asyncio.to_thread(server.stop)
        finally:
            source.close()
    return 0


def _dashboard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dashboard-port", type=int, default=5006, help="dashboard port (0: any free port)")
    p.add_argument("--dashboard-address", default="127.0.0.1", help="dashboard address (loopback by default)")


def cmd_status(a: argparse.Namespace) -> int:
    """Attach to a running lab and print its counters as JSON."""
    from overwatch_lab.lab import Lab

    lab = Lab.attach(a.data_dir)
    try:
        print(json.dumps({"connection": lab.connection_info() | {"nats_token": "***"}}, indent=2))
        print(lab.frames.states().shape[0], "entities in KV")
    finally:
        lab.down()
    return 0


def _param(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value); the value is JSON when it parses (numbers, true, lists), else text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameter {text!r} must be key=value")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def cmd_command(a: argparse.Namespace) -> int:
    """Send a command to a running lab and print each status transition as it happens."""
    from overwatch_lab.lab import Lab
    from overwatch_lab.protocol.commands import CommandStatus

    params = dict(a.params)
    lab = Lab.attach(a.data_dir)
    try:
        if a.broadcast:
            handle = lab.commands.broadcast(a.entity, a.action, ttl_s=a.ttl, source="cli", **params)
        else:
            handle = lab.commands.send(a.entity, a.action, org_id=a.org, ttl_s=a.ttl, source="cli", **params)
        print(
            f"command {handle.command_id}: {a.action} → {a.entity}{' (broadcast)' if a.broadcast else ''}",
            flush=True,
        )

        def show(entity_id: str, status: str, at: str, reason: str | None) -> None:
            print(f"  {at}  {entity_id:<20} {status:<10} {reason or ''}".rstrip(), flush=True)

        final = handle.follow(show, timeout=a.timeout)
    finally:
        lab.down()
    if final is None:
        print(f"no final status within {a.timeout:g} s", flush=True)
        return 3
    print(f"final: {final}", flush=True)
    return 0 if final is CommandStatus.SUCCEEDED else 1


def cmd_bench(a: argparse.Namespace) -> int:
    """Run a benchmark and print its figures."""
    from overwatch_lab.bench import ingest

    result = ingest.run(
        entities=a.entities, messages=a.messages, out_dir=Path(a.out), sync_interval=a.sync_interval
    )
    print(ingest.report(result))
    return 0 if result["lost"] == 0 else 1


def cmd_bench_commands(a: argparse.Namespace) -> int:
    """Run the command delivery benchmark and print its figures."""
    from overwatch_lab.bench import commands

    result = commands.run(
        devices=a.devices,
        commands=a.commands,
        sequential=a.sequential,
        out_dir=Path(a.out),
        sync_interval=a.sync_interval,
    )
    print(commands.report(result))
    return 0 if result["not_succeeded"] == 0 else 1


def cmd_bench_durability(a: argparse.Namespace) -> int:
    """Run the durability trial and print its figures."""
    from overwatch_lab.bench import durability

    result = durability.run(fault=a.fault, messages=a.messages, entities=a.entities, out_dir=Path(a.out))
    print(durability.report(result))
    return 0 if result["lost"] == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="overwatch-lab", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run a lab in the foreground")
    up.add_argument("--data-dir", default="./overwatch-data")
    up.add_argument("--nats-url", help="use an existing NATS server/cluster instead of the embedded one")
    up.add_argument("--nats-token")
    up.add_argument("--nats-user")
    up.add_argument("--nats-password")
    up.add_argument("--nats-creds", help="credentials file")
    up.add_argument("--db-url", help="libSQL file path or server URL (default <data-dir>/overwatch.db)")
    up.add_argument("--stale-after", type=float, help="seconds of silence before is_live=false (default 5)")
    up.add_argument(
        "--history-max-age",
        type=float,
        help="prune telemetry history older than this many seconds (default: keep)",
    )
    up.add_argument(
        "--sync-interval", help="embedded broker fsync policy: 'always' or a duration (default 2m)"
    )
    up.add_argument(
        "--fleet",
        default="small-isr-patrol",
        help="simulated fleet to fly: a named scenario or a .yaml/.toml file; 'none' for no fleet",
    )
    up.add_argument("--speed", type=float, default=1.0, help="fleet speed: simulated seconds per second")
    _dashboard_arguments(up)
    up.add_argument("--no-dashboard", action="store_true", help="don't serve the dashboard")
    up.set_defaults(func=cmd_up)

    dash = sub.add_parser("dashboard", help="serve the dashboard of a running lab")
    dash.add_argument("--data-dir", default="./overwatch-data")
    _dashboard_arguments(dash)
    dash.add_argument("--show", action="store_true", help="open a browser")
    dash.set_defaults(func=cmd_dashboard)

    sim = sub.add_parser("sim", help="fly a simulated fleet against a running lab (or any NATS URL)")
    simulators_cli.add_arguments(sim)
    sim.set_defaults(func=simulators_cli.run)

    st = sub.add_parser("status", help="attach to a running lab and print where it is")
    st.add_argument("--data-dir", default="./overwatch-data")
    st.set_defaults(func=cmd_status)

    cm = sub.add_parser(
        "command",
        help="send a command to a running lab and print its status transitions",
        description="e.g. overwatch-lab command uav-1 goto lat=32.9 lon=-96.8 alt_m=40 --ttl 30",
    )
    cm.add_argument("entity", help="entity_id (or org_id with --broadcast)")
    cm.add_argument(
        "action", help="goto, rtl, land, hold, set_mode, arm, disarm, set_speed, follow_route, orbit"
    )
    cm.add_argument(
        "params", nargs="*", type=_param, metavar="key=value", help="values are JSON when they parse"
    )
    cm.add_argument("--data-dir", default="./overwatch-data")
    cm.add_argument("--ttl", type=float, help="seconds the device has to acknowledge (default: the lab's)")
    cm.add_argument("--org", help="org_id (default: the entity's)")
    cm.add_argument("--broadcast", action="store_true", help="ENTITY is an org_id: send to all its entities")
    cm.add_argument("--timeout", type=float, default=60.0, help="stop following after this many seconds")
    cm.set_defaults(func=cmd_command)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    ing = bench_sub.add_parser("ingest", help="end-to-end telemetry ingest vs raw nats-py")
    ing.add_argument("--entities", type=int, default=100)
    ing.add_argument("--messages", type=int, default=100_000)
    ing.add_argument("--out", default="bench-results")
    ing.add_argument("--sync-interval", default="2m")
    ing.set_defaults(func=cmd_bench)
    cb = bench_sub.add_parser(
        "commands", help="command delivery + acks: per-stage latency vs raw request/reply"
    )
    cb.add_argument("--devices", type=int, default=100)
    cb.add_argument("--commands", type=int, default=1000)
    cb.add_argument("--sequential", type=int, default=50, help="commands sent one at a time through the API")
    cb.add_argument("--out", default="bench-results")
    cb.add_argument("--sync-interval", default="2m")
    cb.set_defaults(func=cmd_bench_commands)
    du = bench_sub.add_parser(
        "durability", help="PubAck'd vs stored across a lab or broker kill, with a retrying publisher"
    )
    du.add_argument("--fault", choices=("sigkill", "sigterm", "broker-kill"), default="sigkill")
    du.add_argument("--messages", type=int, default=100_000)
    du.add_argument("--entities", type=int, default=100)
    du.add_argument("--out", default="bench-results")
    du.set_defaults(func=cmd_bench_durability)
    return p


def main(argv: list[str] | None = None) -> int:
    """Console script entry point."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except OverwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a SIGINT before a command armed its handlers: nothing started yet
        return 128 + signal.SIGINT


if __name__ == "__main__":
    raise SystemExit(main())
