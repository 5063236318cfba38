"""A pass that met a store outage leaves its entry `uploading` and its job `failed`, to be retried: once the
lease is over, `verify --all` reports it as waiting for that retry (information, exit 0), as
`verify --completeness` counts it; an entry left `uploading` that no job will retry is still a problem."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from nxserver import free_port
from retrieval_helpers import index, run_cli
from test_pipeline import recent_ms, seed


@pytest.fixture
def failed_in_an_outage(make_config, moto_endpoint, bucket):
    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint,
                         storage__object_lock_mode="", storage__max_attempts=1)
    seed(config, [make_chat(random.Random(9), messages=4, start_ms=recent_ms(30))])
    down = config.with_overrides(**{"storage.endpoint_url": f"http://127.0.0.1:{free_port()}"})
    report = Archiver(down).run_pass()
    assert report.archived == 0, report
    (entry,) = index(config).find()
    assert entry["status"] == "uploading", entry
    jobs = connect(config["mongodb.uri"])[config["index.database"]][config["index.jobs"]]
    assert jobs.find_one({"_id": entry["room"]})["state"] == "failed"
    an_hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)  # the lease (300 s) long over
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"created_at": an_hour_ago}})
    return config, entry, jobs


def test_a_failed_attempt_waiting_for_its_retry_is_no_verification_problem(failed_in_an_outage, tmp_path,
                                                                            capsys) -> None:
    config, entry, _ = failed_in_an_outage
    assert run_cli(config, tmp_path, "verify", "--all", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "PROBLEM" not in out and entry["room"] in out and "retry" in out, out
    assert run_cli(config, tmp_path, "verify", "--all", "--json", "--no-progress") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ok"] and shown["awaiting_retry"] == 1, shown


@pytest.mark.parametrize("job", ["done", "quarantined", None])
def test_an_entry_left_uploading_that_no_job_will_retry_is_still_a_problem(failed_in_an_outage, tmp_path, capsys,
                                                                           job) -> None:
    config, entry, jobs = failed_in_an_outage
    if job is None:
        jobs.delete_one({"_id": entry["room"]})
    else:
        jobs.update_one({"_id": entry["room"]}, {"$set": {"state": job}})
    assert run_cli(config, tmp_path, "verify", "--all", "--no-progress") == 3
    out = capsys.readouterr().out
    assert f"PROBLEM {entry['room']} v1: left 'uploading'" in out and "no pass has completed" in out, out
