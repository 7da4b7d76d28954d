"""``overwatch-lab`` command line: up | status | command | replay | cot | mavlink | export | bench | sim | loadtest.

Only this entry point installs signal handlers (``stop_signals.py``); a Lab never does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overwatch_lab import logs
from overwatch_lab.cli_devices import add_device_parser, sim_relays
from overwatch_lab.cli_flags import (
    DATA_DIR_FLAG,
    UP_CONFIG_FLAGS,
    add_config_flags,
    check_data_dir,
    config_field,
)
from overwatch_lab.cli_status import format_status, lab_status
from overwatch_lab.config import LabConfig, default_data_dir
from overwatch_lab.errors import ConfigError, LabStateError, OverwatchError, ScenarioError
from overwatch_lab.protocol.command_actions import Action
from overwatch_lab.protocol.printable import printable
from overwatch_lab.stop_signals import StopSignals, arm_early, exit_now

if TYPE_CHECKING:
    from overwatch_lab.dashboard.server import DashboardServer
    from overwatch_lab.lab import Lab
    from simulators.scenario import Scenario

DASHBOARD_PORT = 5006
DASHBOARD_ADDRESS = "127.0.0.1"
DASHBOARD_SECRET_ENV = "OVERWATCH_LAB_DASHBOARD_COOKIE_SECRET"
"""Environment variable holding the dashboard's cookie secret (default: a random one per run)."""


def _lab_config(a: argparse.Namespace) -> LabConfig:
    """The LabConfig of the flags given; the others keep LabConfig's defaults."""
    given = {f.field: getattr(a, f.field) for f in UP_CONFIG_FLAGS if getattr(a, f.field, None) is not None}
    try:
        return LabConfig(**given)
    except ConfigError as exc:  # LabConfig names its field; say which flag set it
        flags = [f.flag for f in UP_CONFIG_FLAGS if f.field in given and f.field in str(exc)]
        raise ConfigError(f"{exc} (from {', '.join(flags)})" if flags else str(exc)) from None


def _data_dir(a: argparse.Namespace) -> Path:
    """``--data-dir``, else LabConfig's default (``$OVERWATCH_LAB_DATA_DIR``, else ``./overwatch-data``)."""
    return Path(a.data_dir) if a.data_dir is not None else default_data_dir()


def dashboard_access(a: argparse.Namespace) -> dict[str, Any]:
    """``serve``'s access arguments from ``--dashboard-users`` and $OVERWATCH_LAB_DASHBOARD_COOKIE_SECRET.

    Fails with one line, before anything boots, when the dashboard would be reachable beyond
    loopback without users, or the users file is unusable.
    """
    from overwatch_lab.dashboard.access import Users, check_exposure

    path = getattr(a, "dashboard_users", None)
    users = Users.load(path) if path is not None else None
    check_exposure(a.dashboard_address, users)
    return {"users": users, "cookie_secret_value": os.environ.get(DASHBOARD_SECRET_ENV)}


def check_dashboard_port(a: argparse.Namespace) -> None:
    """Fail with one line, before anything boots, when ``--dashboard-port`` cannot be served."""
    from overwatch_lab.dashboard.server import check_port

    dashboard_access(a)
    try:
        check_port(a.dashboard_address, a.dashboard_port)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; pick another with --dashboard-port (0: any free port) or pass --no-dashboard"
        ) from None


def load_fleet(name: str, duration_s: float | None) -> Scenario | None:
    """The scenario ``up --fleet`` flies (None for 'none'), loaded and checked before the lab boots.

    With ``duration_s`` None the fleet flies until the lab stops, whatever the scenario's own
    ``duration_s``.

    Raises:
        ScenarioError: not a known fleet nor a readable, valid .yaml/.toml file (names the known ones).
    """
    if name == "none":
        return None
    from simulators.catalog import list_scenarios, load_scenario

    known = list(list_scenarios())
    if Path(name).suffix.lower() not in (".yaml", ".yml", ".toml") and name.replace("_", "-") not in known:
        raise ScenarioError(
            f"unknown fleet {name!r}; known fleets: {', '.join(known)} (or a .yaml/.toml file, or 'none')"
        )
    return load_scenario(name).replace(duration_s=duration_s)


def _check_up(a: argparse.Namespace) -> tuple[LabConfig, Scenario | None]:
    """Everything ``up`` can check before it boots anything; one ConfigError/ScenarioError otherwise."""
    if not (0 < a.speed < math.inf):  # also refuses nan
        raise ConfigError(f"--speed must be > 0 and finite, got {a.speed:g}")
    if a.duration is not None and not (0 < a.duration < math.inf):
        raise ConfigError(f"--duration must be > 0 and finite, got {a.duration:g}")
    cfg = _lab_config(a)
    fleet = load_fleet(a.fleet, a.duration)
    if not a.no_dashboard:
        check_dashboard_port(a)
    check_data_dir(cfg.data_dir)  # last: it creates the folder
    return cfg, fleet


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
        cfg, fleet = _check_up(a)
        lab = Lab(cfg)
        print(f"overwatch-lab: starting in {cfg.data_dir}", flush=True)
        await lab.start()  # a first signal meanwhile: stop once started; a second: forced exit
        lab.ended().add_done_callback(lambda _ended: signals.request_stop())
        server = None
        try:
            if not signals.stop_requested.is_set():
                server = await asyncio.to_thread(_show_and_serve, lab, a, fleet)
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


def _show_and_serve(lab: Lab, a: argparse.Namespace, fleet: Scenario | None) -> DashboardServer | None:
    """Start the lab's fleet and dashboard, then print where it all is (blocking: runs in a thread).

    Nothing is announced before both started: a dashboard that cannot serve (its port taken
    since the check) raises here and ``up`` stops the lab and exits 2 with one line.
    """
    cfg = lab.config
    info = lab.connection_info()
    lines = [f"  {key:<12} {info[key]}" for key in ("data_dir", "nats_url", "db_url", "pid")]
    lines.append(
        f"  {'attach':<12} Lab.attach({str(cfg.data_dir)!r})  (an observer; credentials in {cfg.data_dir / 'lab.json'})"
    )
    lines.append(f"  {'devices':<12} overwatch-lab device add ORG ENTITY --data-dir {str(cfg.data_dir)!r}")
    if fleet is not None:
        sim = lab.fleet.simulate(fleet, speed=a.speed)
        sc = sim.scenario
        until = "until Ctrl-C" if sc.duration_s is None else f"for {sc.duration_s:g} simulated s"
        lines.append(
            f"  {'fleet':<12} {sc.name}: {len(sc.devices())} devices, seed {sc.seed}, speed {a.speed:g}, {until}"
        )
    server = None
    if not a.no_dashboard:
        from overwatch_lab.dashboard import serve

        server = serve(lab, port=a.dashboard_port, address=a.dashboard_address, **dashboard_access(a))
        lines.append(f"  {'dashboard':<12} {server.url}")
    print("overwatch-lab is up", *lines, sep="\n")
    print("Ctrl-C to stop.", flush=True)
    return server


def cmd_dashboard(a: argparse.Namespace) -> int:
    """Serve the dashboard of a lab running in another process until SIGINT/SIGTERM."""
    arm_early()
    return asyncio.run(_dashboard(a))


async def _dashboard(a: argparse.Namespace) -> int:
    from overwatch_lab.dashboard import AttachedLab, serve

    with StopSignals(on_force=_forced) as signals:
        check_dashboard_port(a)
        source: Any
        if a.nats_url is not None:  # a deployment this lab does not own: watched read-only
            from overwatch_lab.lab import Lab

            observed = await asyncio.to_thread(
                Lab.observe, a.nats_url, token=a.nats_token, user=a.nats_user, password=a.nats_password,
                creds=a.nats_creds, nkey_seed=a.nats_nkey_seed,
            )  # fmt: skip
            source = _Observed(observed)
            print(f"observing {observed.connection_info()['nats_url']} read-only", flush=True)
        else:
            source = AttachedLab(_data_dir(a), identity=a.identity)
            if (note := no_lab_note(source.data_dir)) is not None:
                print(note, file=sys.stderr, flush=True)
        try:
            server = await asyncio.to_thread(
                serve, source, port=a.dashboard_port, address=a.dashboard_address, show=a.show,
                **dashboard_access(a),
            )  # fmt: skip
            try:
                print(f"dashboard at {server.url}  (Ctrl-C to stop)", flush=True)
                await signals.stop_requested.wait()
            finally:
                await asyncio.to_thread(server.stop)
        finally:
            source.close()
    return 0


class _Observed:
    """A Lab from ``Lab.observe`` as the dashboard's source (``close()`` stops the observer)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    @property
    def frames(self) -> Any:
        """The observer's frames."""
        return self.lab.frames

    def stats(self) -> dict[str, Any]:
        """The observer's counters."""
        return self.lab.stats()

    def close(self) -> None:
        """Stop observing (the deployment is untouched)."""
        self.lab.down()


def no_lab_note(data_dir: Path) -> str | None:
    """The line ``dashboard`` prints when no lab runs in ``data_dir`` (a typo'd dir served a blank page)."""
    from overwatch_lab.lab import LAB_JSON

    if (data_dir / LAB_JSON).is_file():
        return None
    return (
        f"note: no running lab in {data_dir} ({LAB_JSON} not found); "
        "the dashboard says so until `overwatch-lab up` starts one there"
    )


def _dashboard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dashboard-port", type=int, default=DASHBOARD_PORT, metavar="PORT",
        help="dashboard port; 0: any free port (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--dashboard-address", default=DASHBOARD_ADDRESS, metavar="ADDRESS",
        help="dashboard address (default: %(default)s, loopback); any other needs --dashboard-users",
    )  # fmt: skip
    p.add_argument(
        "--dashboard-users", metavar="FILE",
        help="JSON users file ({name: {password, role: viewer|operator}}): the dashboard asks for a "
        f"login; required beyond loopback. Cookie secret: ${DASHBOARD_SECRET_ENV} (default: random)",
    )  # fmt: skip


def cmd_status(a: argparse.Namespace) -> int:
    """Attach to a running lab and print what it is (from its lab.json), its state and its counters."""
    from overwatch_lab.lab import LAB_JSON, Lab

    data_dir = _data_dir(a)
    lab = Lab.attach(data_dir)  # raises ConfigError (one line) when no lab runs there
    try:
        try:
            info = json.loads((lab.config.data_dir / LAB_JSON).read_text())
        except (OSError, ValueError) as exc:  # the lab stopped between the attach and this read
            raise ConfigError(f"cannot read the lab's {LAB_JSON}: {exc}") from None
        report = lab_status(info, lab.stats(), lab.frames.states())
    finally:
        lab.down()
    print(json.dumps(report, indent=2) if a.json else format_status(report), flush=True)
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
    lab = Lab.attach(_data_dir(a), identity="operator")
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
        entities=a.entities,
        messages=a.messages,
        out_dir=Path(a.out),
        sync_interval=a.sync_interval,
        workers=a.workers,
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


def cmd_bench_mavlink(a: argparse.Namespace) -> int:
    """Run the MAVLink bridge benchmark and print its figures."""
    from overwatch_lab.bench import mavlink

    result = mavlink.run(drones=a.drones, packets=a.packets, out_dir=Path(a.out), workers=a.workers)
    print(mavlink.report(result))
    return 0 if result["lost"] == 0 else 1


def cmd_bench_durability(a: argparse.Namespace) -> int:
    """Run the durability trial and print its figures."""
    from overwatch_lab.bench import durability

    result = durability.run(fault=a.fault, messages=a.messages, entities=a.entities, out_dir=Path(a.out))
    print(durability.report(result))
    return 0 if result["lost"] == 0 else 1


def cmd_bench_frames(a: argparse.Namespace) -> int:
    """Run the frames benchmark and print its figures."""
    from overwatch_lab.bench import frames

    result = frames.run(rows=a.rows, entities=a.entities, out_dir=Path(a.out), repeat=a.repeat)
    print(frames.report(result))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    """Export a data directory's run to Parquet or CSV, with a data dictionary, showing progress."""
    from overwatch_lab.frames import open_data_dir

    frames = open_data_dir(_data_dir(a))
    shown = {"at": 0.0}

    def progress(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - shown["at"] < 0.5:
            return
        shown["at"] = now
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"  {table}: {done:,} / {total:,} rows{pct}", file=sys.stderr, flush=True)

    out = Path(a.out)
    print(f"exporting {_data_dir(a)} to {out} as {a.format} ...", file=sys.stderr, flush=True)
    written = frames.export(
        out, format=a.format, entity=a.entity or None, org=a.org or None, since=a.since, until=a.until,
        progress=None if a.quiet else progress,
    )  # fmt: skip
    for w in written:
        print(f"{w.path}  ({w.rows:,} rows; dictionary {w.dictionary.name})")
    return 0


class _DescribeAction(argparse.Action):
    """``command --help-action ACTION``: print the action's parameters and exit (like ``--help``)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
        option_string: str | None = None,
    ) -> None:  # fmt: skip
        from simulators.catalog import describe_action

        try:
            text = describe_action(str(values))
        except OverwatchError as exc:
            parser.exit(2, f"error: {exc}\n")
        print(text, flush=True)  # on stdout, like --help
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="overwatch-lab", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up",
        help="run a lab in the foreground",
        description="Run a lab (broker, workers, store, synchronizer) with a simulated fleet and its "
        "dashboard until Ctrl-C. Every value is checked before anything boots.",
    )
    add_config_flags(up, UP_CONFIG_FLAGS)
    up.add_argument(
        "--fleet",
        default="small-isr-patrol",
        metavar="SCENARIO",
        help="simulated fleet to fly: a named scenario (`overwatch-lab sim --list` lists them), a "
        ".yaml/.toml file, or 'none' (default: %(default)s)",
    )
    up.add_argument(
        "--speed", type=float, default=1.0, metavar="X",
        help="fleet speed in simulated seconds per second, > 0 (default: %(default)g)",
    )  # fmt: skip
    up.add_argument(
        "--duration", type=float, metavar="S",
        help="stop the fleet after S simulated seconds (the lab keeps running); default: the fleet "
        "flies until Ctrl-C, whatever the scenario's own duration",
    )  # fmt: skip
    _dashboard_arguments(up)
    up.add_argument("--no-dashboard", action="store_true", help="don't serve the dashboard")
    up.set_defaults(func=cmd_up)

    dash = sub.add_parser(
        "dashboard",
        help="serve the dashboard of a running lab, or of a deployment watched read-only (--nats-url)",
        description="Serve the dashboard of the lab running in --data-dir; with --nats-url, of a "
        "deployment the lab does not own (an Overwatch hub), watched read-only: nothing there is "
        "created, changed, deleted or acknowledged.",
    )
    add_config_flags(dash, [DATA_DIR_FLAG, *(f for f in UP_CONFIG_FLAGS if f.field.startswith("nats_"))])
    dash.add_argument(
        "--nats-nkey-seed", metavar="SEED_OR_FILE",
        help="NKey user seed (SU...) for --nats-url, or a file holding it",
    )  # fmt: skip
    _dashboard_arguments(dash)
    dash.add_argument("--show", action="store_true", help="open a browser")
    dash.add_argument(
        "--identity", choices=("observer", "operator"), default="observer",
        help="who the dashboard connects as: observer (default: reads only) or operator (may send commands)",
    )  # fmt: skip
    dash.set_defaults(func=cmd_dashboard)

    sim = sub.add_parser(
        "sim",
        help="fly a simulated fleet against a running lab (or any NATS URL); --list lists the fleets",
    )
    from simulators import cli as simulators_cli  # here, not at import: numpy and the fleets are heavy

    simulators_cli.add_arguments(sim)
    sim.set_defaults(func=partial(simulators_cli.run, relays=sim_relays))  # the fleet speaks as relays

    add_device_parser(sub)

    st = sub.add_parser("status", help="attach to a running lab and print its state and counters")
    add_config_flags(st, [DATA_DIR_FLAG])
    st.add_argument("--json", action="store_true", help="print JSON (for machines) instead of text")
    st.set_defaults(func=cmd_status)

    cm = sub.add_parser(
        "command",
        help="send a command to a running lab and print its status transitions",
        description="e.g. overwatch-lab command uav-1 goto lat=32.9 lon=-96.8 alt_m=40 --ttl 30; "
        "`overwatch-lab command --help-action goto` lists an action's parameters",
    )
    cm.add_argument("entity", help="entity_id (or org_id with --broadcast)")
    cm.add_argument(
        "action", choices=[str(x) for x in Action], metavar="ACTION",
        help=f"one of {', '.join(Action)} (see --help-action ACTION)",
    )  # fmt: skip
    cm.add_argument(
        "params", nargs="*", type=_param, metavar="key=value", help="values are JSON when they parse"
    )
    cm.add_argument(
        "--help-action", action=_DescribeAction, metavar="ACTION",
        help="print ACTION's parameters (units, ranges, required) and exit",
    )  # fmt: skip
    add_config_flags(cm, [DATA_DIR_FLAG])
    cm.add_argument("--ttl", type=float, help="seconds the device has to acknowledge (default: the lab's)")
    cm.add_argument("--org", help="org_id (default: the entity's)")
    cm.add_argument("--broadcast", action="store_true", help="ENTITY is an org_id: send to all its entities")
    cm.add_argument(
        "--timeout", type=float, default=60.0,
        help="stop following after this many seconds (default: %(default)g)",
    )  # fmt: skip
    cm.set_defaults(func=cmd_command)

    cot = sub.add_parser(
        "cot",
        help="send a running lab's fleet to TAK clients as Cursor-on-Target (UDP, multicast or TCP)",
        description="Attach to the lab running in --data-dir and send its live entities as CoT events "
        "(ATAK, WinTAK, WebTAK, TAK Server) at a bounded rate until Ctrl-C.",
    )
    from overwatch_lab.cot import command as cot_command

    cot_command.add_arguments(cot)
    cot.set_defaults(func=cot_command.run)

    lt = sub.add_parser(
        "loadtest",
        help="ramp or hold simulated devices against a lab; rates, latency, loss and the bottleneck",
        description="Ramp (or hold) the load fleet in simulator processes against a lab booted here "
        "(or --data-dir's) until it stops keeping up; report rates, latency, loss, CPU/RSS and the bottleneck.",
    )
    from overwatch_lab.loadtest import command as loadtest_command

    loadtest_command.add_arguments(lt)
    lt.set_defaults(func=loadtest_command.run)

    rp = sub.add_parser(
        "replay",
        help="re-publish a window of a lab's telemetry (re-read from JetStream) at 1x, Nx or max speed",
        description="Re-read the telemetry a lab's stream stored in [--since, --until) and publish it "
        "again, so the mission re-runs through the workers (see overwatch_lab/replay/publisher.py).",
    )
    from overwatch_lab import cli_replay

    cli_replay.add_arguments(rp)
    rp.set_defaults(func=cli_replay.run)

    mv = sub.add_parser(
        "mavlink",
        help="bridge MAVLink autopilots, SITL or a GCS forward (UDP) or a .tlog into a running lab",
        description="Take MAVLink 2 on UDP (or a .tlog with --replay), register each system id as "
        "an entity, publish the 14 projected types as telemetry v1, carry lab commands out as "
        "COMMAND_LONG/COMMAND_INT/SET_MODE/MISSION_ITEM_INT. See docs/mavlink.md.",
    )
    from overwatch_lab.mavlink import command as mavlink_command

    mavlink_command.add_arguments(mv)
    mv.set_defaults(func=mavlink_command.run)

    bench = sub.add_parser(
        "bench", help="benchmarks (each boots a throwaway lab in a temporary folder, not --data-dir)"
    )
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    sync_default = config_field("sync_interval").default
    sync_help = f"{config_field('sync_interval').metadata['help']} (default: %(default)s)"
    out_help = "folder for the JSON and HTML results (default: %(default)s)"
    ing = bench_sub.add_parser("ingest", help="end-to-end telemetry ingest vs raw nats-py")
    ing.add_argument("--entities", type=int, default=100, help="entities publishing (default: %(default)s)")
    ing.add_argument(
        "--messages", type=int, default=100_000, help="messages published (default: %(default)s)"
    )
    ing.add_argument("--out", default="bench-results", help=out_help)
    ing.add_argument("--sync-interval", default=sync_default, help=sync_help)
    ing.add_argument(
        "--workers",
        type=int,
        default=None,
        help="telemetry worker processes (default: the lab's default for this machine; 0 = in the lab)",
    )
    ing.set_defaults(func=cmd_bench)
    cb = bench_sub.add_parser(
        "commands", help="command delivery + acks: per-stage latency vs raw request/reply"
    )
    cb.add_argument("--devices", type=int, default=100, help="simulated devices (default: %(default)s)")
    cb.add_argument("--commands", type=int, default=1000, help="commands sent (default: %(default)s)")
    cb.add_argument(
        "--sequential", type=int, default=50,
        help="commands sent one at a time through the API (default: %(default)s)",
    )  # fmt: skip
    cb.add_argument("--out", default="bench-results", help=out_help)
    cb.add_argument("--sync-interval", default=sync_default, help=sync_help)
    cb.set_defaults(func=cmd_bench_commands)
    du = bench_sub.add_parser(
        "durability", help="PubAck'd vs stored across a lab or broker kill, with a retrying publisher"
    )
    du.add_argument(
        "--fault", choices=("sigkill", "sigterm", "broker-kill"), default="sigkill",
        help="what is killed mid-publish (default: %(default)s)",
    )  # fmt: skip
    du.add_argument("--messages", type=int, default=100_000, help="messages published (default: %(default)s)")
    du.add_argument("--entities", type=int, default=100, help="entities publishing (default: %(default)s)")
    du.add_argument("--out", default="bench-results", help=out_help)
    du.set_defaults(func=cmd_bench_durability)
    bf = bench_sub.add_parser(
        "frames", help="history, tracks, as-of and export frames vs sqlite3 + pandas.read_sql (and DuckDB)"
    )
    bf.add_argument("--rows", type=int, default=1_000_000, help="history rows built (default: %(default)s)")
    bf.add_argument("--entities", type=int, default=1000, help="entities (default: %(default)s)")
    bf.add_argument("--repeat", type=int, default=5, help="runs per case, median kept (default: %(default)s)")
    bf.add_argument("--out", default="bench-results", help=out_help)
    bf.set_defaults(func=cmd_bench_frames)

    bm = bench_sub.add_parser(
        "mavlink", help="MAVLink packets/s the bridge carries into the lab vs pymavlink's raw parse rate"
    )
    bm.add_argument("--drones", type=int, default=1000, help="drones in the capture (default: %(default)s)")
    bm.add_argument(
        "--packets", type=int, default=100_000, help="packets in the capture (default: %(default)s)"
    )
    bm.add_argument("--out", default="bench-results", help=out_help)
    bm.add_argument(
        "--workers", type=int, default=None,
        help="telemetry worker processes (default: the lab's default for this machine; 0 = in the lab)",
    )  # fmt: skip
    bm.set_defaults(func=cmd_bench_mavlink)

    ex = sub.add_parser(
        "export", help="write a data directory's run to Parquet or CSV, with a data dictionary (read-only)"
    )
    ex.add_argument("--data-dir", default=None, help="the lab's data directory (default: the lab default)")
    ex.add_argument("--out", required=True, help="folder for the files")
    ex.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="(default: %(default)s)")
    ex.add_argument(
        "--since",
        default=None,
        help="keep messages at or after this time (ISO 8601, UTC if naive; or epoch s)",
    )
    ex.add_argument("--until", default=None, help="keep messages before this time")
    ex.add_argument("--entity", action="append", default=[], help="keep this entity (repeat for several)")
    ex.add_argument("--org", action="append", default=[], help="keep this organisation (repeat for several)")
    ex.add_argument("--quiet", action="store_true", help="no progress lines")
    ex.set_defaults(func=cmd_export)
    return p


_FOREGROUND = ("up", "dashboard", "cot", "mavlink")  # commands that stop on SIGINT/SIGTERM through StopSignals


def main(argv: list[str] | None = None) -> int:
    """Console script entry point."""
    words = sys.argv[1:] if argv is None else argv
    if next((w for w in words if not w.startswith("-")), None) in _FOREGROUND:
        arm_early()  # before the heavy imports below: a Ctrl-C from now on is a clean stop
    try:
        args = build_parser().parse_args(argv)  # inside: --help-action prints here
        level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
        logs.configure(level, "%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args.func(args))
    except OverwatchError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a SIGINT before a command armed its handlers: nothing started yet
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `status --json | head` closed stdout: no traceback (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush fails silently
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
