"""``overwatch-lab replay``: re-publish a window of a lab's telemetry, re-read from JetStream.

Two ways to name the lab:

- ``--data-dir DIR`` (default: LabConfig's data directory): the lab running there (its
  ``lab.json``); ``--into-data-dir DIR2`` re-publishes into another running lab instead, which
  first gets the organisations and entities the window names (``Lab.replay(into=...)``);
- ``--url URL [--token T]``: any NATS server holding CONSTELLATION_TELEMETRY (no database:
  nothing is registered anywhere); ``--into-url URL2 [--into-token T2]`` for another one.

Into the same lab, ``--fresh-uids`` is required (unchanged message_uids would be dropped as
duplicates). ``--dry-run`` reads the window and prints what it holds without publishing.
Progress goes to stderr; the summary to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from overwatch_lab.config import default_data_dir
from overwatch_lab.errors import ConfigError, FrameError
from overwatch_lab.replay import ReplayResult, check_speed, read_window, republish

__all__ = ["add_arguments", "parse_speed", "run"]


def parse_speed(text: str) -> float | None:
    """``--speed``: a number > 0, or ``max`` (as fast as possible: None)."""
    if text.strip().lower() == "max":
        return None
    try:
        return check_speed(float(text))
    except (ValueError, FrameError) as exc:
        raise argparse.ArgumentTypeError(f"--speed must be a number > 0 or 'max', got {text!r}") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``replay`` flags."""
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir", metavar="DIR", help="the running lab's data directory (default: LabConfig's)"
    )
    where.add_argument(
        "--url", metavar="URL", help="a NATS server URL instead of a lab (no registrations copied)"
    )
    p.add_argument("--token", metavar="TOKEN", help="token for --url")
    into = p.add_mutually_exclusive_group()
    into.add_argument("--into-data-dir", metavar="DIR", help="re-publish into the lab running there instead")
    into.add_argument(
        "--into-url", metavar="URL", help="re-publish into this NATS server instead (with --url)"
    )
    p.add_argument("--into-token", metavar="TOKEN", help="token for --into-url")
    p.add_argument(
        "--since", required=True, metavar="TIME", help="window start: RFC 3339 (naive = UTC) or epoch s"
    )
    p.add_argument(
        "--until", metavar="TIME", help="window end, exclusive (default: the stream's last message)"
    )
    p.add_argument("--entity", action="append", metavar="ID", help="only this entity (repeat for several)")
    p.add_argument("--org", metavar="ID", help="only this organisation")
    p.add_argument(
        "--speed", type=parse_speed, default=1.0, metavar="N|max",
        help="1 = the original pace, N = N times faster, max = as fast as possible (default: 1)",
    )  # fmt: skip
    p.add_argument("--fresh-uids", action="store_true", help="new message_uids (required into the same lab)")
    p.add_argument("--keep-timestamps", action="store_true", help="send the original envelope time stamps")
    p.add_argument("--dry-run", action="store_true", help="read the window and print it; publish nothing")


def _time(text: str | None) -> float | str | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


class _Progress:
    """One self-overwriting line on stderr."""

    def __call__(self, stage: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{stage}: {done:,}/{total:,} messages", end=end, file=sys.stderr, flush=True)


def _summary(frame: Any) -> str:
    """What a window holds: its size, stored time span and messages per entity."""
    lines = [f"window: {len(frame):,} messages, {frame['entity_id'].nunique() if len(frame) else 0} entities"]
    if len(frame):
        lines.append(f"  stored {frame['stored_at'].iloc[0]} .. {frame['stored_at'].iloc[-1]}")
        counts = frame["entity_id"].value_counts(sort=False)
        lines += [f"  {eid:<24} {n:>8,}" for eid, n in counts.items() if n]
    return "\n".join(lines)


def _done(result: ReplayResult) -> str:
    """What a re-publish did, in one line."""
    speed = "max" if result.speed is None else f"{result.speed:g}x"
    return (
        f"re-published {result.published:,} messages at {speed} in {result.elapsed_s:.2f} s "
        f"(span {result.span_s:.2f} s, time stamps shifted {result.shift_s:+.3f} s"
        f"{f', message_uids {result.uid_prefix}-*' if result.uid_prefix else ''})"
    )


def run(a: argparse.Namespace) -> int:
    """Run ``overwatch-lab replay``."""
    since, until = _time(a.since), _time(a.until)
    progress = _Progress()
    if a.url is not None:
        if a.into_data_dir is not None:
            raise ConfigError("--into-data-dir goes with --data-dir; with --url use --into-url")
        return asyncio.run(_run_url(a, since, until, progress))
    if a.into_url is not None:
        raise ConfigError("--into-url goes with --url; with --data-dir use --into-data-dir")
    from overwatch_lab.lab import Lab

    lab = Lab.attach(Path(a.data_dir) if a.data_dir is not None else default_data_dir(), identity="internal")
    into = None
    try:
        if a.into_data_dir is not None:
            into = Lab.attach(Path(a.into_data_dir), identity="internal")
        if a.dry_run:
            frame = lab.frames.replay_frame(since, until, org=a.org, entity=a.entity, progress=progress)
            print(_summary(frame), flush=True)
            return 0
        _same_needs_fresh(a, into is None)
        result = lab.replay(
            since, until, speed=a.speed, fresh_uids=a.fresh_uids, keep_timestamps=a.keep_timestamps,
            org_id=a.org, entity_id=a.entity, into=into, progress=progress,
        )  # fmt: skip
        print(_done(result), flush=True)
    finally:
        if into is not None:
            into.down()
        lab.down()
    return 0


def _same_needs_fresh(a: argparse.Namespace, same: bool) -> None:
    if same and not a.fresh_uids:
        raise ConfigError(
            "re-publishing into the lab the window came from needs --fresh-uids (unchanged message_uids "
            "are dropped as duplicates); or name another lab with --into-data-dir / --into-url"
        )


async def _run_url(a: argparse.Namespace, since: Any, until: Any, progress: _Progress) -> int:
    from overwatch_lab.broker.connect import connect

    nc = await connect(a.url, token=a.token, name="overwatch-lab-replay")
    target = None
    try:
        frame = await read_window(nc, since, until, org_id=a.org, entity_id=a.entity, progress=progress)
        if a.dry_run:
            print(_summary(frame), flush=True)
            return 0
        _same_needs_fresh(a, a.into_url is None)
        if a.into_url is not None:
            target = await connect(a.into_url, token=a.into_token, name="overwatch-lab-replay")
        result = await republish(
            target or nc, frame, speed=a.speed, fresh_uids=a.fresh_uids,
            keep_timestamps=a.keep_timestamps, progress=progress,
        )  # fmt: skip
        print(_summary(frame), _done(result), sep="\n", flush=True)
    finally:
        if target is not None:
            await target.close()
        await nc.close()
    return 0
