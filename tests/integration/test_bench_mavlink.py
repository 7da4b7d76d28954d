"""``overwatch-lab bench mavlink`` runs small: its figures are there and consistent (never timed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overwatch_lab.bench import mavlink as bench


@pytest.mark.slow  # boots a lab and registers 260 entities (~7 s on a loaded box)
def test_the_mavlink_benchmark_runs_small(tmp_path):
    result = bench.run(drones=260, packets=1040, out_dir=tmp_path / "out", workers=0)  # 2 links
    assert result["links"] == 2 and result["lost"] == 0 and result["stored"] == 1040
    assert result["published"] == 1040 and result["bad_packets"] == 0 and result["publish_failed"] == 0
    assert result["kv_documents"] == 260 and result["quarantined"] == 0
    for key in ("raw_parse_rate", "bridge_cpu_rate", "end_to_end_rate", "replay_acked_rate"):
        assert result[key] > 0, key
    saved = json.loads(Path(result["json_path"]).read_text())
    assert saved["end_to_end_rate"] == result["end_to_end_rate"]
    text = bench.report(result)
    assert "ceiling: pymavlink raw parse" in text and "end to end (history stored)" in text
