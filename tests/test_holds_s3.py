"""Object Lock and S3 legal holds against moto's server over HTTP: the endpoint itself refuses."""

from __future__ import annotations

import datetime as dt
import uuid

import boto3
import pytest

from archiver.holds import open_holds
from archiver.integrity import verify_archive
from archiver.mongo import connect
from archiver.retention import Deletions
from archiver.search import SearchFilters
from archiver.store import ObjectLocked, open_store
from faulty_s3 import FaultyS3
from retention_helpers import age, archive, customer_of, erase, index, outcomes, retention, source

ACTOR = {"user": "tester", "host": "test"}
PERSONAL = ("customers", "agents", "participants", "title", "terms", "closed_by")


@pytest.fixture
def s3(make_config, bucket, moto_endpoint):
    """COMPLIANCE lock of 1 day per the rule; retention deletes the source after 0 days."""
    def build(**overrides):
        return make_config(**{"storage__url": f"s3://{bucket}/chats", "storage__endpoint_url": moto_endpoint,
                              "storage__object_lock_mode": "COMPLIANCE",
                              "retention__rules": {"default": {"source_days": 0, "archive_days": 2, "lock_days": 1}},
                              **overrides})
    return build


UNLOCKED = {"storage__object_lock_mode": "", "retention__rules": {"default": {"source_days": 0, "archive_days": 2}}}


def _client(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


def _legal_hold(config, entry) -> set[str]:
    client = _client(config["storage.endpoint_url"])
    bucket = config["storage.url"][5:].split("/")[0]
    found = set()
    for obj in entry["objects"].values():
        answer = client.get_object_legal_hold(Bucket=bucket, Key="chats/" + obj["key"], VersionId=obj["version_id"])
        found.add(answer.get("LegalHold", {}).get("Status", "OFF"))  # never set: moto answers without one
    return found


def _present(config, entry) -> bool:
    store = open_store(config, writable=False)
    return all(store.get(o["key"], o["version_id"]) for o in entry["objects"].values())


def test_locked_objects_are_refused_by_the_endpoint_and_reported_not_failed(s3) -> None:
    config = s3()
    chats = archive(config, 2)
    retention(config)  # sources go (0 days), archives stay
    assert source(config).count_documents({}) == 0
    # The index claims the archives are long expired; the store's locks (1 day, real time) say otherwise.
    age(config, 30)
    result = retention(config)
    for chat in chats:
        outcome, _ = outcomes(result)[("delete_archive", chat["room"], 1)]
        assert outcome == "refused"
    refused = [i for i in result.report["items"] if i["outcome"] == "refused"]
    assert all("AccessDenied" in i["detail"] or "Access Denied" in i["detail"] for i in refused), refused
    assert result.ok, "a refusal is reported, the run does not fail"
    for entry in index(config).find():
        assert entry["status"] == "archived" and "deletion" not in entry and _present(config, entry)


def test_locked_until_a_future_date_is_skipped_with_that_date(s3) -> None:
    config = s3()
    chats = archive(config, 1)
    retention(config)
    entry = index(config).find_one()
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"archived_at": entry["archived_at"] - dt.timedelta(days=5)}})
    result = retention(config)
    (item,) = result.report["items"]
    assert item["action"] == "skip" and item["room"] == chats[0]["room"]
    assert item["reason"] == f"archive kept: locked until {entry['retain_until'].isoformat()}Z".replace("+00:00", "")
    assert _present(config, entry)


def test_placing_a_hold_sets_the_s3_legal_hold_and_new_archives_of_held_chats_get_it(s3) -> None:
    config = s3(retention__rules={})
    first = archive(config, 2)
    customer = customer_of(first[0])
    holds = open_holds(config)
    hold = holds.place(SearchFilters(customer=customer), "Case S3", "litigation", ACTOR)
    for batch in holds.rooms_of(hold):
        holds.protect(batch, Deletions(config).store_of)
    held_entry = index(config).find_one({"room": first[0]["room"]})
    assert _legal_hold(config, held_entry) == {"ON"} and held_entry["legal_hold"] is True
    assert _legal_hold(config, index(config).find_one({"room": first[1]["room"]})) == {"OFF"}
    # A chat of the same customer archived after the hold was placed: the pass sets the legal hold.
    from archiver.pipeline import Archiver
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed
    import random

    later, contact = make_chat(random.Random(99), messages=4, start_ms=recent_ms(5))
    for message in later["messages"]:
        if not message["data"]["content"]["user"]["isAgent"]:
            message["data"]["content"]["user"]["id"] = customer
    contact["users"] = {customer: {"nickname": "Cliente", "channel": "web"}}
    seed(config, [(later, contact)])
    assert Archiver(config).run_pass().archived == 1
    new_entry = index(config).find_one({"room": later["room"]})
    assert customer in new_entry["customers"] and _legal_hold(config, new_entry) == {"ON"}
    # moto refuses to delete a held version even once its lock has expired
    store = open_store(config, writable=False)
    obj = new_entry["objects"]["pdf"]
    with pytest.raises(ObjectLocked):
        store.delete(obj["key"], obj["version_id"])


def test_releasing_a_hold_clears_the_legal_hold_only_where_no_other_hold_applies(s3) -> None:
    config = s3(retention__rules={})
    chats = archive(config, 2)
    a, b = (index(config).find_one({"room": c["room"]}) for c in chats)
    holds = open_holds(config)
    store_of = Deletions(config).store_of
    for case, filters in (("Case 1", SearchFilters(room=a["room"])), ("Case 1", SearchFilters(room=b["room"])),
                          ("Case 2", SearchFilters(room=b["room"]))):
        hold = holds.place(filters, case, "r", ACTOR)
        for batch in holds.rooms_of(hold):
            holds.protect(batch, store_of)
    released = holds.release("Case 1", "settled", ACTOR)
    assert len(released) == 2
    for hold in released:
        for batch in holds.rooms_of(hold):
            holds.unprotect(batch, store_of)
    assert _legal_hold(config, index(config).find_one({"_id": a["_id"]})) == {"OFF"}
    assert _legal_hold(config, index(config).find_one({"_id": b["_id"]})) == {"ON"}, "Case 2 still holds it"
    assert [h["case"] for h in holds.listing()] == ["Case 2"]
    assert {h["case"] for h in holds.listing(everything=True) if not h["active"]} == {"Case 1"}


def test_a_policy_change_extends_existing_locks_and_never_shortens_them(s3, bucket, moto_endpoint) -> None:
    config = s3(retention__rules={"default": {"source_days": 0, "archive_days": 30, "lock_days": 10}})
    archive(config, 1)
    entry = index(config).find_one()
    longer = s3(retention__rules={"default": {"source_days": 0, "archive_days": 30, "lock_days": 20}})
    result = retention(longer)
    assert outcomes(result)[("extend_lock", entry["room"], 1)][0] == "extended"
    want = entry["generated_at"].replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=20)
    client = _client(moto_endpoint)
    for obj in entry["objects"].values():
        head = client.head_object(Bucket=bucket, Key="chats/" + obj["key"], VersionId=obj["version_id"])
        assert abs(head["ObjectLockRetainUntilDate"] - want) < dt.timedelta(seconds=1)
    assert abs(index(config).find_one()["retain_until"].replace(tzinfo=dt.timezone.utc) - want) < dt.timedelta(seconds=1)
    shorter = s3(retention__rules={"default": {"source_days": 0, "archive_days": 30, "lock_days": 5}})
    assert not [i for i in retention(shorter).report["items"] if i["action"] == "extend_lock"]
    store = open_store(shorter, writable=False)
    obj = entry["objects"]["pdf"]
    in_force = store.extend_retention(obj["key"], obj["version_id"], want - dt.timedelta(days=15))
    assert abs(in_force - want) < dt.timedelta(seconds=1)
    head = client.head_object(Bucket=bucket, Key="chats/" + obj["key"], VersionId=obj["version_id"])
    assert abs(head["ObjectLockRetainUntilDate"] - want) < dt.timedelta(seconds=1), "never shortened"


def test_erasure_removes_what_it_may_and_names_holds_and_locks(s3) -> None:
    config = s3(retention__rules={})
    chats = archive(config, 3)
    customer = customer_of(chats[0])
    for chat in source(config).find():  # the same customer in all three
        for message in chat["messages"]:
            if not message["data"]["content"]["user"]["isAgent"]:
                message["data"]["content"]["user"]["id"] = customer
        source(config).replace_one({"_id": chat["_id"]}, chat)
    contacts = connect(config["mongodb.uri"])[config["source.database"]][config["source.contacts"]]
    contacts.update_many({}, {"$set": {"userID": customer}})  # who opened them too: no chat is shared
    index(config).update_many({}, {"$set": {"customers": [customer], "opened_by": customer}})
    held_room, locked_room, _ = (c["room"] for c in chats)
    open_holds(config).place(SearchFilters(room=held_room), "Case E", "litigation", ACTOR)
    dry = erase(config, customer, dry_run=True)
    assert source(config).count_documents({}) == 3
    result = erase(config, customer)
    assert [{k: v for k, v in i.items() if k not in ("outcome", "detail")} for i in dry.report["items"]] == \
        [{k: v for k, v in i.items() if k not in ("outcome", "detail")} for i in result.report["items"]]
    got = {(i["action"], i["room"]): i for i in result.report["items"]}
    assert got[("skip", held_room)]["reason"].endswith("held by case 'Case E'")
    assert got[("skip", locked_room)]["reason"].startswith("archive kept: locked until ")
    assert got[("delete_source", locked_room)]["outcome"] == "deleted"
    assert {c["room"] for c in source(config).find()} == {held_room}
    assert index(config).count_documents({"status": "archived"}) == 3  # held or locked: kept, and named
    assert result.ok and {i["outcome"] for i in result.report["items"]} == {"deleted", "skipped"}
    report = verify_archive(config, None)  # legal holds set, the run's signed report in the store: all explained
    assert report.ok and report.reports >= 1, report.problems


def test_a_retention_run_repairs_missing_legal_holds_and_locks_its_report(s3, bucket, moto_endpoint) -> None:
    config = s3(retention__rules={"default": {"source_days": 300, "archive_days": 400, "lock_days": 1}})
    chats = archive(config, 1)
    open_holds(config).place(SearchFilters(room=chats[0]["room"]), "Case X", "r", ACTOR)  # S3 not told
    assert _legal_hold(config, index(config).find_one()) == {"OFF"}
    result = retention(config)
    assert _legal_hold(config, index(config).find_one()) == {"ON"}
    head = _client(moto_endpoint).head_object(Bucket=bucket, Key="chats/" + result.location["key"])
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] > dt.datetime.now(
        dt.timezone.utc) + dt.timedelta(days=3000)
    assert verify_archive(config, None).ok


def test_a_hold_sets_the_s3_legal_hold_on_attachment_objects_too(s3, server, files) -> None:
    from attachment_server import PDF, png
    from test_attachments_archive import chat_with
    from test_pipeline import seed
    from archiver.pipeline import Archiver

    files.add("/a.png", png())
    files.add("/b.pdf", PDF)
    config = s3(retention__rules={}, attachments__enabled=True, attachments__hosts=["127.0.0.1"],
                attachments__allowed_networks=["127.0.0.1/32"], attachments__timeout_seconds=2.0,
                attachments__ports=[int(server.rsplit(":", 1)[1])])
    chat, contact = chat_with([("IMAGE", f"{server}/a.png"), ("DOCUMENT", f"{server}/b.pdf")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    entry = index(config).find_one({"room": chat["room"]})
    assert {"attachment-4", "attachment-5"} <= set(entry["objects"]) and _legal_hold(config, entry) == {"OFF"}
    holds = open_holds(config)
    hold = holds.place(SearchFilters(room=chat["room"]), "Case 14", "litigation", ACTOR)
    for batch in holds.rooms_of(hold):
        holds.protect(batch, Deletions(config).store_of)
    assert _legal_hold(config, index(config).find_one({"room": chat["room"]})) == {"ON"}
    assert verify_archive(config, None).ok


def test_an_erasure_the_endpoint_refuses_keeps_the_entry_whole_and_its_seal_leaf(s3) -> None:
    """A stray S3 legal hold on the first object: nothing goes, so the entry stays archived with every
    personal field and the leaf a seal covers, not a stripped entry that no longer matches its seal."""
    from archiver.seals import leaf_hash

    config = s3(retention__rules={}, storage__object_lock_mode="")
    chats = archive(config, 1)
    entry = index(config).find_one()
    first = next(iter(entry["objects"].values()))
    open_store(config).set_legal_hold(first["key"], first["version_id"], True)  # no hold in the index
    result = erase(config, customer_of(chats[0]))
    outcome, _ = outcomes(result)[("delete_archive", chats[0]["room"], 1)]
    assert outcome == "refused" and result.ok
    after = index(config).find_one()
    assert after["status"] == "archived" and "deletion" not in after
    assert {k: after.get(k) for k in PERSONAL} == {k: entry.get(k) for k in PERSONAL}
    assert leaf_hash(after) == leaf_hash(entry) and _present(config, after)


def test_a_release_the_store_refuses_in_part_is_audited_and_the_next_run_clears_what_is_left(
        s3, tmp_path, capsys) -> None:
    """S3 refuses to clear one version's legal hold (it names a version the bucket does not have): the other
    room is cleared, the release is audited with the failure and exits 1, and the next retention run's sync
    clears the hold that no active hold applies to any more."""
    from archiver.cli import main
    from archiver.mongo import connect
    from conftest import write_toml

    config = s3(retention__rules={})
    chats = archive(config, 2)
    a, b = (index(config).find_one({"room": c["room"]}) for c in chats)
    keys = ("mongodb.uri", "source.database", "index.database", "storage.url", "storage.endpoint_url",
            "storage.object_lock_mode", "signing.certificate", "signing.key", "encryption.recipients")
    toml = str(write_toml(tmp_path / "cli.toml", {k: config[k] for k in keys}))
    for room in (a["room"], b["room"]):
        assert main(["--config", toml, "hold", "place", "--room", room, "--case", "Case R", "--reason", "r"]) == 0
    real_version = a["objects"]["pdf"]["version_id"]
    index(config).update_one({"_id": a["_id"]}, {"$set": {"objects.pdf.version_id": "no-such-version"}})
    assert main(["--config", toml, "hold", "release", "--case", "Case R", "--reason", "settled"]) == 1
    out = capsys.readouterr().out
    assert "could not be cleared on 1" in out and a["room"] in out
    assert _legal_hold(config, index(config).find_one({"_id": b["_id"]})) == {"OFF"}
    audit = connect(config["mongodb.uri"])[config["index.database"]][config["index.audit"]]
    (record,) = audit.find({"action": "hold_release", "outcome": {"$ne": "started"}})
    assert record["outcome"] == "items_failed" and a["room"] in record["detail"]
    assert index(config).find_one({"_id": a["_id"]})["legal_hold"] is True, "still recorded as set"
    index(config).update_one({"_id": a["_id"]}, {"$set": {"objects.pdf.version_id": real_version}})
    assert _legal_hold(config, index(config).find_one({"_id": a["_id"]})) == {"ON"}
    retention(config)  # its sync clears legal holds no active hold applies to
    assert _legal_hold(config, index(config).find_one({"_id": a["_id"]})) == {"OFF"}
    assert "legal_hold" not in index(config).find_one({"_id": a["_id"]})


def test_set_aside_objects_are_deleted_for_good_in_a_versioned_bucket(s3, bucket, moto_endpoint) -> None:
    """An interrupted attempt's object is recorded by key alone: every version of it goes, not hidden behind
    a delete marker."""
    import hashlib

    config = s3(retention__rules={}, storage__object_lock_mode="")
    chats = archive(config, 1)
    entry = index(config).find_one()
    leftover = entry["objects"]["pdf"]["key"] + ".attempt-1"
    open_store(config).put(leftover, b"ciphertext", hashlib.sha256(b"ciphertext").hexdigest(), None)
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"superseded_objects": [leftover]}})
    assert outcomes(erase(config, customer_of(chats[0])))[("delete_archive", chats[0]["room"], 1)][0] == "deleted"
    listed = _client(moto_endpoint).list_object_versions(Bucket=bucket, Prefix="chats/" + entry["room"])
    assert listed.get("Versions", []) == [] and listed.get("DeleteMarkers", []) == []
    report = verify_archive(config, None)
    assert report.ok and report.tombstones == 1, report.problems


class _PowerCut(BaseException):
    pass


def test_a_deletion_cut_short_and_then_held_is_not_finished_and_its_objects_are_held(
        make_config, bucket, moto_endpoint, monkeypatch) -> None:
    """A run stops after the first object of an archive went; a hold is then placed on the room: what is left
    gets the S3 legal hold, and neither the resumed run nor a later one deletes it."""
    from archiver.store.s3 import S3Store

    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint,
                         storage__object_lock_mode="", retention__rules={"default": {"source_days": 1, "archive_days": 2}})
    room = archive(config, 1)[0]["room"]
    age(config, 10)
    real, deleted = S3Store.delete, []

    def delete_then_power_cut(self, key, version_id=""):
        real(self, key, version_id)
        deleted.append(key)
        raise _PowerCut()
    monkeypatch.setattr(S3Store, "delete", delete_then_power_cut)
    with pytest.raises(_PowerCut):
        retention(config)
    monkeypatch.setattr(S3Store, "delete", real)
    entry = index(config).find_one()
    assert (entry["status"], entry["deletion"]["state"]) == ("deleted", "deleting") and len(deleted) == 1
    holds = open_holds(config)
    holds.place(SearchFilters(room=room), "Case Q", "subpoena received", ACTOR)
    assert holds.protect([room], Deletions(config).store_of) == 1  # what `hold place` does next
    left = {name: obj for name, obj in entry["objects"].items() if obj["key"] != deleted[0]}
    assert len(left) == 2 and _legal_hold(config, {"objects": left}) == {"ON"}
    for run in range(2):  # the interrupted run, resumed; then a new one
        result = retention(config)
        assert result.resumed == (run == 0)
        assert outcomes(result).get(("delete_archive", room, 1), ("", ""))[0] != "deleted"
        items = [i for i in result.report["items"] if i["room"] == room and i["action"] != "delete_source"]
        assert items and all(i["outcome"] == "skipped" and "Case Q" in i.get("detail", i["reason"]) for i in items), items
    store = open_store(config)
    for obj in left.values():
        assert store.get(obj["key"], obj["version_id"])  # still there
    assert index(config).find_one()["deletion"]["state"] == "deleting"
    from archiver.mongo import connect
    steps = connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_steps"]]
    step = steps.find_one({"run": entry["deletion"]["run"], "entry_id": entry["_id"], "outcome": "skipped"})
    assert step["kept_objects"] == list(left), step  # by their recorded S3 versions: what was there when kept


def test_an_archive_stored_before_versioning_is_deleted_for_good_once_versioning_is_on(s3, moto_endpoint) -> None:
    """Stored while the bucket had no versioning (version id ""), then versioning turned on (Object Lock on an
    existing bucket needs it): a delete without VersionId would only hide the ciphertext behind a delete
    marker while the report said deleted and verify was clean."""
    plain = f"plain-{uuid.uuid4().hex[:10]}"
    client = _client(moto_endpoint)
    client.create_bucket(Bucket=plain)
    config = s3(storage__url=f"s3://{plain}/chats", **UNLOCKED)
    archive(config, 1)
    entry = index(config).find_one()
    assert {o["version_id"] for o in entry["objects"].values()} == {""}
    client.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    age(config, 30)
    result = retention(config)
    assert [(i["action"], i["outcome"]) for i in result.report["items"]] == [("delete_source", "deleted"),
                                                                             ("delete_archive", "deleted")]
    listed = client.list_object_versions(Bucket=plain, Prefix="chats/" + entry["room"])
    assert listed.get("Versions", []) == [] and listed.get("DeleteMarkers", []) == []
    assert verify_archive(config, None).ok


def test_a_delete_denied_for_want_of_permission_fails_the_run_naming_it_not_a_lock(s3, bucket) -> None:
    """A 403 AccessDenied from IAM (no s3:DeleteObjectVersion) was reported `refused` as "Object Lock or a legal
    hold" on every run, exit 0: retention silently never deleted. Nothing here is locked or held."""
    with FaultyS3() as proxy:
        config = s3(storage__endpoint_url=proxy.url, storage__max_attempts=1, **UNLOCKED)
        archive(config, 1)
        entry = index(config).find_one()
        age(config, 30)
        proxy.deny_deletes = True
        for _ in range(2):  # the next run says the same: never quietly settled
            result = retention(config)
            item = next(i for i in result.report["items"] if i["action"] == "delete_archive")
            assert item["outcome"] == "failed" and "s3:DeleteObjectVersion" in item["detail"], item
            assert "no Object Lock" in item["detail"] and not result.ok
            assert index(config).find_one()["status"] == "archived", "nothing went: no tombstone is left"
        assert proxy.seen_deletes >= 2 and _present(config, entry)
        proxy.deny_deletes = False
        result = retention(config)  # permission granted: the deletion is done
        assert [(i["action"], i["outcome"]) for i in result.report["items"]] == [("delete_archive", "deleted")]
        assert index(config).find_one()["deletion"]["state"] == "done"


def test_a_delete_denied_where_a_legal_hold_applies_is_still_refused(s3, bucket, moto_endpoint) -> None:
    with FaultyS3() as proxy:
        config = s3(storage__endpoint_url=proxy.url, storage__max_attempts=1, **UNLOCKED)
        archive(config, 1)
        entry = index(config).find_one()
        for obj in entry["objects"].values():  # set outside the archiver: S3 has the last word
            _client(moto_endpoint).put_object_legal_hold(Bucket=bucket, Key="chats/" + obj["key"],
                                                         VersionId=obj["version_id"], LegalHold={"Status": "ON"})
        age(config, 30)
        proxy.deny_deletes = True
        result = retention(config)
        item = next(i for i in result.report["items"] if i["action"] == "delete_archive")
        assert item["outcome"] == "refused" and "legal hold" in item["detail"] and result.ok, item
        assert index(config).find_one()["status"] == "archived" and _present(config, entry)


# -- rooms held only through their source chats get the S3 legal hold too --------------------------------------

CLI_KEYS = ("mongodb.uri", "source.database", "index.database", "storage.url", "storage.endpoint_url",
            "storage.object_lock_mode", "signing.certificate", "signing.key", "encryption.recipients")
NEW_CUSTOMER = "9876543210987654"


def _opened_since(config, chat) -> None:
    """The source contact now says NEW_CUSTOMER opened CHAT (its index entry, archived before, names another)."""
    from archiver.mongo import connect

    contacts = connect(config["mongodb.uri"])[config["source.database"]][config["source.contacts"]]
    contacts.update_one({"id": chat["room"]}, {"$set": {"userID": NEW_CUSTOMER}})


def test_hold_place_sets_the_s3_legal_hold_on_a_room_held_only_through_its_source_and_release_clears_it(
        s3, tmp_path, capsys) -> None:
    from archiver.cli import main
    from conftest import write_toml

    config = s3(retention__rules={})
    held, other = archive(config, 2)
    _opened_since(config, held)
    toml = str(write_toml(tmp_path / "cli.toml", {k: config[k] for k in CLI_KEYS}))
    assert main(["--config", toml, "hold", "place", "--customer", NEW_CUSTOMER, "--case", "Case O",
                 "--reason", "litigation"]) == 0
    out = capsys.readouterr().out
    assert "1 archived room(s) covered now (1 of them through the source chat only)" in out, out
    entry = index(config).find_one({"room": held["room"]})
    assert NEW_CUSTOMER not in (entry["customers"], entry["opened_by"])  # the index does not show the link
    assert _legal_hold(config, entry) == {"ON"} and entry["legal_hold"] is True
    assert _legal_hold(config, index(config).find_one({"room": other["room"]})) == {"OFF"}
    retention(config)  # its sync keeps it: a hold still covers the room
    assert _legal_hold(config, entry) == {"ON"}
    # another case holds the room by the index; released, the legal hold stays: Case O holds it through its source
    assert main(["--config", toml, "hold", "place", "--room", held["room"], "--case", "Case R", "--reason", "r"]) == 0
    assert main(["--config", toml, "hold", "release", "--case", "Case R", "--reason", "settled"]) == 0
    assert "legal hold cleared on 0 archived version(s)" in capsys.readouterr().out
    assert _legal_hold(config, entry) == {"ON"} and index(config).find_one({"_id": entry["_id"]})["legal_hold"]
    assert main(["--config", toml, "hold", "release", "--case", "Case O", "--reason", "settled"]) == 0
    assert "legal hold cleared on 1 archived version(s)" in capsys.readouterr().out
    assert _legal_hold(config, entry) == {"OFF"} and "legal_hold" not in index(config).find_one({"_id": entry["_id"]})


def test_a_retention_run_sets_the_s3_legal_hold_on_rooms_held_through_their_source_and_clears_it_after(s3) -> None:
    """Its sync: set where a hold covers the source chat (placed without S3 being told), cleared once none does
    (the source changed back), and set again when a hold by the source's service comes (gap 1's filters)."""
    config = s3(retention__rules={})
    held, other = archive(config, 2)
    _opened_since(config, held)
    holds = open_holds(config)
    holds.place(SearchFilters(customer=NEW_CUSTOMER), "Case O", "litigation", ACTOR)  # S3 not told
    entry = index(config).find_one({"room": held["room"]})
    assert _legal_hold(config, entry) == {"OFF"}
    assert retention(config).ok
    assert _legal_hold(config, entry) == {"ON"} and index(config).find_one({"_id": entry["_id"]})["legal_hold"]
    assert _legal_hold(config, index(config).find_one({"room": other["room"]})) == {"OFF"}
    holds.release("Case O", "settled", ACTOR)  # S3 not told
    assert retention(config).ok
    assert _legal_hold(config, entry) == {"OFF"} and "legal_hold" not in index(config).find_one({"_id": entry["_id"]})
    from archiver.mongo import connect

    contacts = connect(config["mongodb.uri"])[config["source.database"]][config["source.contacts"]]
    contacts.update_one({"id": held["room"]}, {"$set": {"serv_name": "Held service"}})
    holds.place(SearchFilters(service="Held service"), "Case S", "litigation", ACTOR)
    assert retention(config).ok
    assert _legal_hold(config, entry) == {"ON"}
    contacts.update_one({"id": held["room"]}, {"$set": {"serv_name": entry["service"]}})  # changed back
    assert retention(config).ok
    assert _legal_hold(config, entry) == {"ON"}, "once covered, held while Case S is active (held_by_source)"
    holds.release("Case S", "settled", ACTOR)
    assert retention(config).ok
    assert _legal_hold(config, entry) == {"OFF"}, "no hold covers it any longer"


# -- review "two", findings 1 and 6: the legal hold set through a source stays once the source is purged --------

def test_the_s3_legal_hold_set_through_a_split_hold_stays_once_the_live_system_purges_the_source(s3) -> None:
    """Agent A in v2 only, service S in v1 only: the repair sets the legal hold on both versions; the live system
    then purges the chat. The next run, 400 days on, neither clears the legal hold nor deletes a version."""
    from test_hold_scope import AGENT_A, _purge, _two_versions

    config = s3(**UNLOCKED)
    chat, service = _two_versions(config)
    open_holds(config).place(SearchFilters(agent=AGENT_A, service=service), "HR 12", "inquiry", ACTOR)
    assert retention(config).ok
    versions = list(index(config).find({"room": chat["room"]}))
    assert [_legal_hold(config, v) for v in versions] == [{"ON"}, {"ON"}]
    _purge(config, chat)
    age(config, 400)
    result = retention(config)
    assert not [i for i in result.report["items"] if i["action"] == "delete_archive"], result.report["items"]
    assert [(v["status"], v["legal_hold"], _legal_hold(config, v)) for v in index(config).find(
        {"room": chat["room"]}).sort("version", 1)] == [("archived", True, {"ON"})] * 2


def test_a_new_version_of_a_room_recorded_held_through_its_source_gets_the_legal_hold_from_the_archive_pass(
        s3, tmp_path) -> None:
    """Held by words its archive masks (a PIN), so only through the source: once a retention run recorded it
    (held_by_source), the archive pass gives a new version of the room the legal hold at once, and a purge of
    the source after that leaves it on. (Before any record, the next retention run's repair sets it.)"""
    from archiver.pipeline import Archiver
    from retrieval_helpers import search_key
    from test_hold_scope import PIN, _agent_wrote, _chat_saying, _purge
    from test_pipeline import seed

    config = s3(retention__rules={}, search__key_file=str(search_key(tmp_path)))
    chat, contact = _chat_saying(PIN)
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    hold = open_holds(config).place(SearchFilters(text="4821"), "Refund dispute", "litigation", ACTOR)
    assert open_holds(config).held_rooms([chat["room"]], [hold]) == {}, "the index cannot show masked words"
    assert retention(config).ok
    assert index(config).find_one()["held_by_source"] == [hold["_id"]]
    _agent_wrote(config, chat, "USER_agent_B@acd.example.com")
    assert Archiver(config).archive_room(chat["room"], "ended")[0].archived == 1
    v2 = index(config).find_one({"room": chat["room"], "version": 2})
    assert v2["legal_hold"] is True and _legal_hold(config, v2) == {"ON"}
    _purge(config, chat)
    assert retention(config).ok
    assert [_legal_hold(config, v) for v in index(config).find({"room": chat["room"]})] == [{"ON"}, {"ON"}]
