"""Index times read back from nx-27017 (the shared wire-protocol stand-in), which returns a top-level date
written with $set as text ('2026-11-26 14:35:31.455000'): search, retention and seal read every stored time
through one helper (archiver.mongo.stored_time) and neither crash nor print another format."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from archiver.cli import main
from archiver.mongo import stored_time
from conftest import write_toml
from retrieval_helpers import CLI_KEYS, archive_samples, index

def run_cli(config, tmp_path, *argv: str) -> int:
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in (*CLI_KEYS, "source.database",
                                                                        "storage.object_lock_mode")})
    return main(["--config", str(toml), *argv])


ISO_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture
def on_nx(make_config, nx_uri):
    config = make_config(mongodb__uri=nx_uri, storage__object_lock_mode="")
    (entry,) = archive_samples(config, count=1)
    return config, index(config).find_one({"_id": entry["_id"]})


def test_the_stand_in_returns_set_dates_as_text_and_stored_time_reads_both(on_nx) -> None:
    _, entry = on_nx
    if isinstance(entry["archived_at"], dt.datetime):
        pytest.skip("a real MongoDB keeps dates (the text this test is about is nx-27017's)")
    assert isinstance(entry["archived_at"], str)  # what the rest of this file is about
    assert stored_time(entry["archived_at"]) == stored_time(dt.datetime.fromisoformat(entry["archived_at"]))
    assert stored_time(dt.datetime(2026, 1, 2, 3, 4, 5)) == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert stored_time("2026-01-02T03:04:05Z") == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert stored_time("not a time") is None and stored_time(None) is None and stored_time(17) is None


def test_search_prints_the_table_and_iso_times(on_nx, tmp_path, capsys) -> None:
    config, entry = on_nx
    ended = stored_time(entry["ended_at"])
    assert run_cli(config, tmp_path, "search") == 0
    out = capsys.readouterr().out
    assert entry["room"] in out and ended.strftime("%Y-%m-%d %H:%M:%S") in out and "1 entry" in out, out
    assert run_cli(config, tmp_path, "search", "--json") == 0
    (shown,) = json.loads(capsys.readouterr().out)
    import re
    for field in ("ended_at", "archived_at", "started_at"):
        assert re.match(ISO_Z, shown[field]), (field, shown[field])
    assert stored_time(shown["archived_at"]) == stored_time(entry["archived_at"]).replace(
        microsecond=stored_time(entry["archived_at"]).microsecond // 1000 * 1000)


def test_retention_decides_on_stored_times(on_nx, tmp_path, monkeypatch, capsys) -> None:
    """A rule keeping the source 0 days: the dry run says the source chat would be deleted."""
    config, entry = on_nx
    monkeypatch.setenv("ARCHIVER_RETENTION__RULES", json.dumps({"default": {"source_days": 0}}))
    code = run_cli(config, tmp_path, "retention", "run", "--dry-run")
    out = capsys.readouterr()
    assert code == 0, out
    assert entry["room"] in out.out and "delete" in out.out, out.out
