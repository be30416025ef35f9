"""The Datasette metadata describes real columns and its canned queries answer on a real recording."""

from __future__ import annotations

import json
import threading
import time

from agentprobe.datasette import METADATA
from proxy_fixtures import run_cli


def test_metadata_matches_schema_and_queries_answer(recorded, fake_provider_tls):
    client = recorded.openai(fake_provider_tls)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}],
                                   extra_headers={"x-fake": "status=429; retry_after=0.1; fail_times=1"})
    threads = []
    for i in range(3):
        t = threading.Thread(target=client.chat.completions.create, kwargs=dict(
            # 0.4 s apart: wide enough that a loaded machine (the suite under xdist) keeps the reverse order.
            model="m", messages=[{"role": "user", "content": f"p{i}"}],
            extra_headers={"x-fake": f"delay={1.2 - 0.4 * i:.1f}"}))
        t.start()
        threads.append(t)
        time.sleep(0.03)
    [t.join() for t in threads]
    db = recorded.db()
    meta = json.loads(METADATA.read_text())["databases"]["agentprobe"]
    for table, spec in meta["tables"].items():
        assert set(spec.get("columns", {})) <= set(db[table].columns_dict), table
    results = {name: db.execute(q["sql"]).fetchall() for name, q in meta["queries"].items()}
    assert results["retries"] and results["retries"][0][2] == 2  # attempt 2
    assert len(results["completion_inversions"]) == 3  # three calls finished in reverse
    assert results["errors_by_status"][0][1] == 429
    assert results["context_growth"]


def test_cli_prints_the_path():
    r = run_cli("datasette-metadata")
    assert r.returncode == 0 and r.stdout.strip() == str(METADATA)


def test_a_database_of_another_name_gets_metadata_keyed_by_that_name(tmp_path):
    r = run_cli("datasette-metadata", "--db", str(tmp_path / "mydb.db"),
                env={"AGENTPROBE_CONFDIR": str(tmp_path / "conf")})
    assert r.returncode == 0, r.stderr
    meta = json.loads(open(r.stdout.strip()).read())
    assert list(meta["databases"]) == ["mydb"]
    assert meta["databases"]["mydb"]["queries"] == json.loads(METADATA.read_text())["databases"]["agentprobe"]["queries"]
