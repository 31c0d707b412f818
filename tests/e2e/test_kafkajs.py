"""KafkaJS (npm), a third client family that speaks only non-flexible API versions:
admin, producer (acks=-1), and a consumer group that commits and resumes."""

import json
import os
import pathlib
import subprocess

HERE = pathlib.Path(__file__).parent / "kafkajs"


def test_kafkajs_produce_consume_group_and_resume(tern_factory):
    assert (HERE / "node_modules" / "kafkajs").exists(), "run `npm ci --prefix tests/e2e/kafkajs` (tests/run does)"
    tern = tern_factory(config="[groups]\ninitial_rebalance_delay_ms = 200\nmin_session_timeout_ms = 1000\n")
    result = subprocess.run(["node", str(HERE / "group_round_trip.js"), tern.bootstrap, "js-topic", "3000"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["first"] == 3000 and summary["distinct"] == 3000 and summary["values"] == 3000, summary
    assert summary["second"] == 0, "the second consumer resumes after the committed offsets"
    assert summary["committed"] == 3000, summary
    assert "js-group" in summary["groups"]
