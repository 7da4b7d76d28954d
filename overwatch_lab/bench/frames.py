"""``overwatch-lab bench frames``: the analysts' frames against sqlite3 + pandas.read_sql (and DuckDB).

It builds a history **directly through the store's schema** (no broker, no workers: the
database file a lab would write, filled by one ``executemany`` transaction), then times, each
beside the same work done with ``sqlite3`` + ``pandas.read_sql`` in the same run (and with
DuckDB over the same SQLite file when ``duckdb`` and its sqlite scanner import):

- one entity over one hour (``frames.history``);
- the whole table (``frames.history()``);
- 100 entities x 1 hour resampled to 1 s, mean (``frames.tracks``);
- the as-of picture of every entity (``frames.as_of``);
- a Parquet export of the whole history (``frames.export``'s telemetry file).

Each figure is the median of ``repeat`` runs (the whole-table and export ones of fewer).
Targets (issue 8): entity-hour < 50 ms and <= 1.1x read_sql; whole table <= 0.5x read_sql;
resample within 1.5x DuckDB; as-of < 200 ms. Prints a table and writes JSON.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from overwatch_lab.frames import Frames
from overwatch_lab.frames import columns as cols
from overwatch_lab.frames import history as h
from overwatch_lab.frames import tracks as tr
from overwatch_lab.frames.filters import Filters
from overwatch_lab.store.schema import TELEMETRY_INSERT_COLUMNS, apply_pragmas, migrate

T0 = 1_800_000_000.0
"""Epoch of the first message (2027-01-15T08:00:00Z)."""
SPAN_S = 7200.0
"""The history covers two hours."""
TYPES = ("GLOBAL_POSITION_INT", "SYS_STATUS", "VFR_HUD", "ATTITUDE", "HEARTBEAT")
BUSY_SHARE = 0.8
"""Share of the rows sent by the busiest fifth of the entities."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _row(eid: str, org: str, k: int, ts: float, lat: float, lon: float) -> tuple[Any, ...]:
    mt = TYPES[k % len(TYPES)]
    values: list[Any] = [None] * 19
    if mt == "GLOBAL_POSITION_INT":
        values[0:7] = [lat, lon, 120.0 + (k % 50), 30.0, 1.2, 0.4, -0.1]
    elif mt == "SYS_STATUS":
        values[14:17] = [max(0, 100 - k // 40), 15800 - k, 1250]
    elif mt == "VFR_HUD":
        values[10:14] = [float(k % 360), 12.5, 13.0, 0.2]
    elif mt == "ATTITUDE":
        values[7:10] = [0.01, -0.02, 1.5]
    else:
        values[17:19] = [1, "GUIDED"]
    return (f"{eid}-{k:07d}", org, eid, mt, "", ts, ts + 0.05, 1, 1, *values, "{}", 0)


def build(db_path: Path, rows: int = 1_000_000, entities: int = 1000) -> dict[str, Any]:
    """Create a lab database at ``db_path`` holding ``rows`` telemetry rows of ``entities`` entities.

    The first fifth of the entities send :data:`BUSY_SHARE` of the rows; every entity's
    messages are spread over :data:`SPAN_S` and cycle through :data:`TYPES`. Organisations and
    entities are registered too. Returns what was built and how long it took.
    """
    started = time.perf_counter()
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    apply_pragmas(conn, remote=False)
    migrate(conn)
    busy = max(1, entities // 5)
    per_busy = int(rows * BUSY_SHARE) // busy if entities > busy else rows // busy
    rest = rows - per_busy * busy
    per_other = rest // (entities - busy) if entities > busy else 0
    counts = [per_busy] * busy + [per_other] * (entities - busy)
    counts[0] += rows - sum(counts)
    eids = [f"e{i:04d}" for i in range(entities)]
    orgs = [f"org-{i % 4}" for i in range(entities)]
    now = "2027-01-15T08:00:00Z"
    sql = f"INSERT INTO telemetry ({', '.join(TELEMETRY_INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(TELEMETRY_INSERT_COLUMNS))})"

    def generate() -> Any:
        for i, (eid, org, n) in enumerate(zip(eids, orgs, counts, strict=True)):
            step = SPAN_S / max(1, n)
            lat0, lon0 = 32.0 + i * 0.01, -96.0
            for k in range(n):
                yield _row(eid, org, k, T0 + k * step, lat0 + k * 2e-6, lon0 + k * 2e-6)

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO organizations VALUES (?, ?, 'civilian', NULL, NULL, ?, ?)",
        [(f"org-{i}", f"Org {i}", now, now) for i in range(min(4, entities))],
    )
    conn.executemany(
        "INSERT INTO entities (entity_id, org_id, name, entity_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(e, o, e, "aircraft_multirotor", now, now) for e, o in zip(eids, orgs, strict=True)],
    )
    # The secondary indexes are rebuilt after the load (a sort) instead of updated per row.
    conn.execute("DROP INDEX idx_telemetry_entity_ts")
    conn.execute("DROP INDEX idx_telemetry_ts")
    conn.execute("DROP INDEX idx_telemetry_entity_type_ts")
    conn.executemany(sql, generate())
    conn.execute("CREATE INDEX idx_telemetry_entity_ts ON telemetry(entity_id, ts)")
    conn.execute("CREATE INDEX idx_telemetry_ts ON telemetry(ts)")
    conn.execute("CREATE INDEX idx_telemetry_entity_type_ts ON telemetry(entity_id, message_type, ts)")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    took = time.perf_counter() - started
    return {"rows": rows, "entities": entities, "build_s": took, "rows_per_s": rows / took}


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def _duckdb(db_path: Path) -> Any | None:
    try:
        duckdb = importlib.import_module("duckdb")
        con = duckdb.connect()
        found = glob.glob(
            str(
                Path(str(importlib.import_module("duckdb_extension_sqlite_scanner").__file__)).parent
                / "extensions"
                / "*"
                / "*.duckdb_extension"
            )
        )
        con.execute(f"LOAD '{found[0]}'" if found else "LOAD sqlite_scanner")
        con.execute(f"ATTACH '{db_path}' AS s (TYPE sqlite, READ_ONLY)")
        return con
    except Exception as exc:  # optional comparison: any failure to import or load skips it
        _log(f"DuckDB skipped: {type(exc).__name__}: {exc}")
        return None


def run(
    rows: int = 1_000_000, entities: int = 1000, out_dir: Path = Path("bench-results"), repeat: int = 5
) -> dict[str, Any]:
    """Build the history, time every case and write JSON; return the result."""
    with tempfile.TemporaryDirectory(prefix="overwatch-bench-frames-") as tmp:
        db = Path(tmp) / "overwatch.db"
        _log(
            f"building {rows:,} telemetry rows of {entities} entities directly through the store's schema ..."
        )
        built = build(db, rows, entities)
        _log(f"built in {built['build_s']:.1f} s ({built['rows_per_s']:,.0f} rows/s)")
        frames = Frames(str(db))
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        duck = _duckdb(db)
        cases: dict[str, dict[str, Any]] = {}

        def case(
            name: str,
            ours: Callable[[], Any],
            read_sql: Callable[[], Any],
            duckdb: Callable[[], Any] | None,
            n: int,
        ) -> None:
            _log(f"timing {name} ...")
            t_ours, r_ours = _time(ours, n)
            t_sql, _ = _time(read_sql, n)
            t_duck = _time(duckdb, n)[0] if duckdb is not None and duck is not None else None
            cases[name] = {"frames_s": t_ours, "read_sql_s": t_sql, "duckdb_s": t_duck, "rows": len(r_ours),
                           "vs_read_sql": t_ours / t_sql, "vs_duckdb": (t_ours / t_duck) if t_duck else None}  # fmt: skip

        names = h.wanted_columns(None)
        one = Filters.of(entity="e0001", since=T0 + 600, until=T0 + 4200)
        sql_one, p_one = h.history_sql(one, names)
        case("one entity, one hour", lambda: frames.history(entity="e0001", since=T0 + 600, until=T0 + 4200),
             lambda: pd.read_sql(sql_one, conn, params=cast(Any, p_one)), None, repeat)  # fmt: skip
        sql_all, _ = h.history_sql(Filters(), names)
        case("whole table", lambda: frames.history(), lambda: pd.read_sql(sql_all, conn),
             (lambda: duck.execute(sql_all.replace("FROM telemetry", "FROM s.telemetry")).df()) if duck else None,
             max(1, repeat // 3))  # fmt: skip
        ents = [f"e{i:04d}" for i in range(min(100, entities))]
        measures = tr.track_columns(None)
        hour = Filters.of(entity=ents, since=T0 + 600, until=T0 + 4200)
        where, params = hour.where()
        raw_sql = f"SELECT entity_id, ts, {h.select_list(measures)} FROM telemetry{where}"
        marks = ", ".join(f"'{e}'" for e in ents)
        duck_sql = (f"SELECT entity_id, floor(ts) AS b, {', '.join(f'avg({cols.BY_NAME[m].sql}) AS {m}' for m in measures)} "
                    f"FROM s.telemetry WHERE entity_id IN ({marks}) AND ts >= {T0 + 600} AND ts < {T0 + 4200} GROUP BY 1, 2")  # fmt: skip

        def read_sql_resample() -> pd.DataFrame:
            raw = pd.read_sql(raw_sql, conn, params=cast(Any, params))
            raw.index = pd.to_datetime(raw.pop("ts"), unit="s", utc=True)
            return raw.groupby("entity_id").resample("1s").mean()

        case(f"{len(ents)} entities x 1 h resampled to 1 s (mean)",
             lambda: frames.tracks("1s", how="mean", entity=ents, since=T0 + 600, until=T0 + 4200),
             read_sql_resample, (lambda: duck.execute(duck_sql).df()) if duck else None, max(1, repeat // 2))  # fmt: skip
        at = T0 + 3600
        state = ", ".join(f"{cols.BY_NAME[c].sql} AS {c}" for c in cols.STATE)

        def read_sql_as_of() -> pd.DataFrame:
            raw = pd.read_sql(
                f"SELECT entity_id, ts, {state} FROM telemetry t WHERE ts <= ? AND ts = (SELECT MAX(ts) FROM telemetry "
                "WHERE entity_id = t.entity_id AND message_type = t.message_type AND ts <= ?)", conn, params=(at, at))  # fmt: skip
            return raw.sort_values("ts").groupby("entity_id").last()

        duck_asof = (f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY entity_id, message_type ORDER BY ts DESC) AS r "
                     f"FROM s.telemetry WHERE ts <= {at}) WHERE r = 1")  # fmt: skip
        case(f"as-of picture of {entities} entities", lambda: frames.as_of(at), read_sql_as_of,
             (lambda: duck.execute(duck_asof).df()) if duck else None, repeat)  # fmt: skip
        out = Path(tmp) / "export"

        def read_sql_parquet() -> pd.DataFrame:
            frame = pd.read_sql(h.history_sql(Filters(), h.HISTORY_COLUMNS)[0], conn)
            frame.to_parquet(out / "read_sql.parquet")
            return frame

        out.mkdir()
        case(f"{rows:,}-row Parquet export", lambda: _export(frames, out), read_sql_parquet, None, 1)
        conn.close()
    result = {"what": "frames benchmark", "built": built, "cases": cases, "cpu_count": os.cpu_count(),
              "note": "rows written directly through the store's schema (one executemany transaction), not ingested",
              "targets": _targets(cases)}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"frames-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    result["json_path"] = str(path)
    return result


def _export(frames: Frames, out: Path) -> np.ndarray:
    written = frames.export(out, format="parquet")
    return np.empty(written[0].rows)


def _targets(cases: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    by = list(cases.values())
    one, whole, resample, asof = by[0], by[1], by[2], by[3]
    return {
        "one entity-hour < 50 ms": one["frames_s"] < 0.050,
        "one entity-hour <= 1.1x read_sql": one["vs_read_sql"] <= 1.1,
        "whole table <= 0.5x read_sql": whole["vs_read_sql"] <= 0.5,
        "resample within 1.5x DuckDB": None
        if resample["vs_duckdb"] is None
        else resample["vs_duckdb"] <= 1.5,
        "as-of < 200 ms": asof["frames_s"] < 0.200,
    }


def report(r: dict[str, Any]) -> str:
    """Human-readable summary of a result."""
    b = r["built"]
    lines = [
        f"frames benchmark: {b['rows']:,} history rows of {b['entities']} entities, {r['cpu_count']} cores "
        f"(built directly through the store's schema in {b['build_s']:.1f} s, {b['rows_per_s']:,.0f} rows/s; not ingested)",
        f"  {'case':<44}{'rows':>10}{'frames':>11}{'read_sql':>11}{'ratio':>8}{'DuckDB':>11}{'ratio':>8}",
    ]
    for name, c in r["cases"].items():
        duck = "-" if c["duckdb_s"] is None else f"{c['duckdb_s'] * 1000:.0f} ms"
        vs_duck = "-" if c["vs_duckdb"] is None else f"{c['vs_duckdb']:.2f}x"
        lines.append(
            f"  {name:<44}{c['rows']:>10,}{c['frames_s'] * 1000:>8.0f} ms{c['read_sql_s'] * 1000:>8.0f} ms"
            f"{c['vs_read_sql']:>7.2f}x{duck:>11}{vs_duck:>8}"
        )
    lines.append(
        "  targets: "
        + "; ".join(f"{k}: {'-' if v is None else 'yes' if v else 'NO'}" for k, v in r["targets"].items())
    )
    lines.append(f"  JSON: {r['json_path']}")
    return "\n".join(lines)
