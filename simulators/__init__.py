"""Simulated device fleets that talk to a lab only over NATS, exactly as real devices would.

Seeded, whole-fleet deterministic runs with faults: the same scenario, seed and start time
produce the same bytes on the wire on every run, at any speed (:func:`telemetry_hash`).

Layout::

    clock.py          SimClock: simulated time, paced by a rate (0 manual, 1 real time, >1 faster)
    kinematics.py     pure geometry and motion helpers      battery.py  pure LiPo pack model
    behaviours.py     hold, goto, route, orbit, patrol, rtl, land (guidance only)
    devices/          one module per kind: limits (SPEC) and model; base.py the shared device,
                      spec.py KindSpec, gps.py the GPS receiver, command_handler.py what a
                      device does with a command (the lab's action vocabulary, at most once)
    telemetry.py      MAVLink message bodies in raw units; DEFAULT_RATES_HZ
    message_schedule.py  which telemetry messages are due at each tick
    faults.py         Fault, FaultKind, DEFAULT_PARAMS, timeline_frame()
    link.py           the radio link: link-level faults on a device's messages
    malformed.py      the ways a malformed message is broken        emission.py  Emission
    scenario_specs.py the parts of a scenario (Area, FleetSpec, ...)
    scenario_fields.py field checks naming the field path   scenario_parse.py  plain data -> parts
    scenario.py       Scenario (YAML/TOML/Python): the validated whole, to_dict()
    catalog.py        load_scenario(), list_scenarios(), describe_action()
    fleet_layout.py   one seed -> every device: formations, random streams, first behaviours
    model.py          FleetModel: devices stepped in ticks -> Emission (subject, bytes, Nats-Msg-Id)
    dry_run.py        telemetry_hash(): the determinism check, no NATS
    registration.py   publish_all() and register(): a fleet's registration with a lab;
                      register_fleet(): the lab's side before it issues a fleet's relays
    uplink.py         Uplink: one connection, or one per organisation (each with its relay)
    runner.py         run_scenario(): real-time pacing + core publish; RunHandle
    multiproc.py      run_scenario_processes(): the fleet split over worker processes
    process_worker.py one worker process and the pipe protocol
    command_link.py   a device's command endpoint on the wire (receive, ack, at most once)
    fleets/           named scenarios: small_isr_patrol (default), area_search, load_1000
    cli.py            ``overwatch-lab sim`` (main(argv))     bench.py  ``python -m simulators.bench``

The seam to the lab
-------------------
A run needs only a NATS URL and credentials: one relay identity per organisation issued by the
lab (``lab.fleet.relays(scenario)``, which registers the fleet first; ``lab.fleet.simulate`` and
``overwatch-lab sim`` do it themselves), a device or relay of ``overwatch-lab device``, or (a bare
server, an outside deployment) one identity for everything. With relays the fleet opens one
connection per organisation (``uplink.py``'s :class:`Uplink`) and sends only what a device may
(no organisation events, no KV reads). Nothing here imports ``overwatch_lab.lab``.

In-process (one connection, on the caller's event loop)::

    from simulators import load_scenario, run_scenario
    nc = await overwatch_lab.broker.connect.connect(url, auth=auth)
    handle = await run_scenario(load_scenario("small-isr-patrol"), nc, speed=1.0)
    handle.pause(); handle.play(); handle.set_speed(10)
    handle.inject("link_loss", 20, "drone-001")            # live fault, 20 simulated seconds
    handle.stats()                                         # counts per type, lag, link stats
    handle.fault_timeline()                                # DataFrame to overlay on plots
    await handle.stop()

``lab.fleet.simulate(scenario)`` can wrap this on the lab's loop thread: build the client with the
lab's URL and credentials (a dedicated connection, so the fleet behaves like outside devices and its
outgoing buffer does not compete with the workers), ``lab.call(run_scenario(...))``, and hand
the ``RunHandle`` back: its plain methods (play, pause, set_speed, inject, command) are safe to
call from the notebook's thread; ``stop``/``wait``/``advance`` are coroutines for the lab's loop.
With one full-rights connection ``run_scenario`` waits by default (up to 10 s) until the lab's KV
bucket shows every device before telemetry starts, re-sending ``created`` events for devices the
lab has not registered; on relays (``registered=True``: the lab registered them) it sends only
the ``bootsequence`` events and starts at once.

In worker processes (large fleets; same handle surface, ``command`` is async)::

    handle = await run_scenario_processes(scenario, url, auth=auth, processes=2)

From the shell: ``overwatch-lab sim SCENARIO [--data-dir DIR | --nats-url URL] [--token T | --credentials FILE]
[--speed X] [--seed N] [--duration S] [--processes N]`` (``--list`` names the scenarios); the lab's CLI hooks
:func:`simulators.cli.add_arguments` and :func:`simulators.cli.run` into its ``sim`` subcommand.
"""

from __future__ import annotations

from simulators.catalog import describe_action, list_scenarios, load_scenario
from simulators.clock import SimClock
from simulators.devices.command_handler import CommandResult
from simulators.dry_run import telemetry_hash
from simulators.emission import Emission
from simulators.faults import Fault, FaultKind, timeline_frame
from simulators.model import FleetModel
from simulators.multiproc import ProcessRunHandle, run_scenario_processes
from simulators.runner import RunHandle, run_scenario
from simulators.scenario import Scenario

__all__ = [
    "CommandResult",
    "Emission",
    "Fault",
    "FaultKind",
    "FleetModel",
    "ProcessRunHandle",
    "RunHandle",
    "Scenario",
    "SimClock",
    "describe_action",
    "list_scenarios",
    "load_scenario",
    "run_scenario",
    "run_scenario_processes",
    "telemetry_hash",
    "timeline_frame",
]
