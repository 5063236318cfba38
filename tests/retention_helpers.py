"""Archive sample chats and age them, for the retention, hold and erasure tests."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from archiver.audit import Actor
from archiver.config import Config
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.retention import Deletions, RunResult
from archiver.samples import make_chat
from test_pipeline import recent_ms, seed

RULES = {"default": {"source_days": 30, "archive_days": 365}}


def retention_config(make_config, **overrides: Any) -> Config:
    """No Object Lock unless asked (a lock would outlive the test's aged archives)."""
    values = {"storage__object_lock_mode": "", "retention__rules": RULES, **overrides}
    return make_config(**values)


def archive(config: Config, count: int, rng_seed: int = 7, **contact_fields: Any) -> list[dict[str, Any]]:
    rng = random.Random(rng_seed)
    chats = []
    for i in range(count):
        chat, contact = make_chat(rng, messages=6, start_ms=recent_ms(60 - i))
        contact.update(contact_fields)
        chats.append((chat, contact))
    seed(config, chats)
    report = Archiver(config).run_pass()
    assert report.archived == count, report
    return [c for c, _ in chats]


def index(config: Config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.entries"]]


def source(config: Config):
    return connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]]


def jobs(config: Config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.jobs"]]


def age(config: Config, days: float, **query: Any) -> None:
    """Make the matching archives DAYS older (archived, generated and locked that much earlier)."""
    shift = dt.timedelta(days=days)
    for entry in index(config).find(query):
        index(config).update_one({"_id": entry["_id"]}, {"$set": {
            "archived_at": entry["archived_at"] - shift, "generated_at": entry["generated_at"] - shift,
            "retain_until": entry["retain_until"] - shift}})


def retention(config: Config, dry_run: bool = False) -> RunResult:
    deletions = Deletions(config)
    return deletions.run("retention", deletions.plan_retention, {}, dry_run, Actor("tester", "test"))


def erase(config: Config, customer: str, reason: str = "GDPR request 1", dry_run: bool = False,
          include_shared: bool = False) -> RunResult:
    """As `archiver erase` runs one (commands/erase.py)."""
    deletions = Deletions(config)
    return deletions.run("erasure", deletions.plan_erasure(customer, reason, include_shared),
                         {"customer": customer, "reason": reason, "include_shared": include_shared}, dry_run,
                         Actor("tester", "test"))


def outcomes(result: RunResult) -> dict[tuple[str, str, Any], tuple[str, str]]:
    """(action, room, version) -> (outcome, reason) of every item but skips (a room may have two)."""
    return {(i["action"], i["room"], i["version"]): (i["outcome"], i["reason"]) for i in result.report["items"]
            if i["action"] != "skip"}


def customer_of(chat: dict[str, Any]) -> str:
    return next(m["data"]["content"]["user"]["id"] for m in chat["messages"]
                if not m["data"]["content"]["user"]["isAgent"])


def assert_erasure_drops(config: Config, chat: dict[str, Any], field: str) -> None:
    """Erasing CHAT's customer leaves a tombstone without FIELD, which it lists as personal data removed."""
    erase(config, customer_of(chat))
    entry = index(config).find_one()
    assert entry["status"] == "deleted" and field not in entry, entry
    assert field in entry["deletion"]["personal_data_removed"]


def agent_of(chat: dict[str, Any]) -> str:
    return next(m["data"]["content"]["user"]["id"] for m in chat["messages"]
                if m["data"]["content"]["user"]["isAgent"])


def undecodable(monkeypatch, room: str) -> None:
    """ROOM's documents as MongoDB cannot decode them (a corrupt message or contact): reading it raises InvalidBSON."""
    from bson.errors import InvalidBSON

    from archiver.source import ChatSource

    real = ChatSource._load_many

    def load_many(self, rooms):
        if room in rooms:
            raise InvalidBSON("year 10000 is out of range")
        return real(self, rooms)
    monkeypatch.setattr(ChatSource, "_load_many", load_many)
