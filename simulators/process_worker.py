"""One worker process of process mode: its own event loop, NATS connection and slice of the fleet.

:func:`worker_main` is the ``spawn`` target :func:`simulators.multiproc.run_scenario_processes`
starts: it rebuilds the scenario from plain data, runs its devices with
:func:`simulators.runner.run_scenario` and answers the parent over its pipe.

Control and counts travel over one ``multiprocessing`` pipe per worker (tuples, pickled):
parent → worker ``("go", start_epoch_s)``, ``("pause",)``, ``("play",)``, ``("speed", x)``,
``("inject", fault_dict)``, ``("command", req_id, entity_id, command)``, ``("stop",)``;
worker → parent ``("ready", n)``, ``("stats", dict)``, ``("result", req_id, dict)``,
``("done", dict)``, ``("error", text)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from overwatch_lab.errors import ConfigError
from overwatch_lab.nats_auth import NatsAuth
from simulators.faults import Fault
from simulators.scenario import Scenario
from simulators.uplink import Uplink

STATS_EVERY_S = 0.5  # s between the stats a worker sends its parent
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def worker_main(
    conn: Connection,
    scenario_data: dict[str, Any],
    members: list[int],
    url: str,
    auth: NatsAuth | Mapping[str, NatsAuth] | None,
    speed: float,
    duration_s: float | None,
    index: int,
    parent_pid: int,
    log_level: int,
    register_timeout_s: float | None = None,
    registered: bool = False,
) -> None:
    """Entry point of one worker process (runs its own event loop).

    ``auth`` is one identity for every organisation, or one per organisation (the relays the lab
    issued): the worker then opens one connection per organisation among its devices.
    """
    _die_with_parent(parent_pid)
    logging.basicConfig(
        level=log_level, format=f"%(asctime)s sim-worker-{index} %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(
            _worker(
                conn, scenario_data, members, url, auth, speed, duration_s, index, register_timeout_s, registered
            )
        )
    except BaseException as exc:  # report anything (even KeyboardInterrupt) to the parent, then exit
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


async def _worker(
    conn: Connection,
    scenario_data: dict[str, Any],
    members: list[int],
    url: str,
    auth: NatsAuth | Mapping[str, NatsAuth] | None,
    speed: float,
    duration_s: float | None,
    index: int,
    register_timeout_s: float | None,
    registered: bool,
) -> None:
    from overwatch_lab.broker.connect import connect
    from simulators.runner import run_scenario

    scenario = Scenario.from_dict(scenario_data)
    if isinstance(auth, Mapping):
        devices = scenario.devices()
        orgs = sorted({devices[m][2] for m in members})
        if missing := [org for org in orgs if org not in auth]:
            raise ConfigError(f"no credentials for organisation(s) {missing} (have {sorted(auth)})")
        by_org: dict[str, Any] = {}
        try:
            for org in orgs:
                by_org[org] = await connect(url, auth=auth[org], name=f"overwatch-lab-sim-{index}:{org}")
        except BaseException:
            if by_org:
                await Uplink(by_org=by_org).drain()
            raise
        nc = Uplink(by_org=by_org)
    else:
        nc = Uplink.single(await connect(url, auth=auth, name=f"overwatch-lab-sim-{index}"))
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=10_000)

    def readable() -> None:
        try:
            while conn.poll():
                inbox.put_nowait(conn.recv())
        except (EOFError, OSError):  # the parent is gone
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop",))

    loop.add_reader(conn.fileno(), readable)
    try:
        conn.send(("ready", len(members)))
        first = await inbox.get()
        if first[0] != "go":
            return
        handle = await run_scenario(
            scenario,
            nc,
            speed=speed,
            duration_s=duration_s,
            start_epoch_s=first[1],
            members=members,
            register_timeout_s=register_timeout_s,
            registered=registered,
        )
        ended = asyncio.ensure_future(handle.ended.wait())
        while not handle.done:
            getter = asyncio.ensure_future(inbox.get())
            await asyncio.wait({getter, ended}, timeout=STATS_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                conn.send(("stats", handle.stats()))
                continue
            msg = getter.result()
            op = msg[0]
            if op == "stop":
                break
            if op == "pause":
                handle.pause()
            elif op == "play":
                handle.play()
            elif op == "speed":
                handle.set_speed(msg[1])
            elif op == "inject":
                fault = Fault.from_description(msg[1])
                handle.model.add_fault(fault)
            elif op == "command":
                _, req_id, entity_id, command = msg
                try:
                    res = handle.command(entity_id, command)
                    conn.send(("result", req_id, dataclasses.asdict(res)))
                except KeyError:
                    conn.send(
                        ("result", req_id, {"command_id": "", "accepted": False, "reason": "unknown entity"})
                    )
        ended.cancel()
        final = await handle.stop()
        conn.send(("done", final))
    finally:
        loop.remove_reader(conn.fileno())
        await nc.drain()
