"""The seal records in the index are not trusted for what only the signed seal documents can vouch for:
an insider with write access to the index and the store (no keys) must not switch a day's seal off by
marking its record pending, explain a removed seal's objects as an `abandoned` folder of another, or turn
tampering into a crash (exit 1) by editing a record's shape (docs/seals.md, "Several sealers" and "What
`archiver verify` checks").

Moved here from the seal review's reproductions (reports/seal-tests/test_seal_review.py: HIGH-1, HIGH-2,
MEDIUM-1, MEDIUM-2, LOW-1, LOW-2)."""

from __future__ import annotations

import datetime as dt

import pytest

from archiver import seals
from archiver.integrity import verify_archive
from archiver.mongo import connect, server_ms
from retrieval_helpers import archive_samples, index, remove_stored
from test_seals import DAY, backdate, built_on, seal_cli, seal_four, seal_records
from test_seals import sealed as sealed_day  # noqa: F401 (test_seals' fixture, registered here as `sealed_day`)

ACTOR = seals.Actor("test", "host")
FORGED = {"owner": "x", "at": 10**15, "folder": "~seals/x"}  # a reservation dated in the year 33658


@pytest.fixture(name="sealed")
def _sealed(sealed_day):  # noqa: F811 (the fixture imported above)
    """Four chats archived on DAY, a few audited actions, and DAY sealed with a timestamp (test_seals.py)."""
    return sealed_day


def _seals(config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.seals"]]


def _remove_entry_and_objects(config, entry) -> None:
    for obj in entry["objects"].values():
        remove_stored(config, obj["key"])
    index(config).delete_one({"_id": entry["_id"]})


def _late_entry(config, seed: int = 99) -> dict:
    """One more chat archived now and dated DAY (after DAY was sealed): the next seal of DAY covers it."""
    later = archive_samples(config, count=1, rng_seed=seed)
    (newcomer,) = [e for e in later if e.get("archived_at").date() != DAY]
    backdate(config, [newcomer["room"]])
    return index(config).find_one({"room": newcomer["room"]})


def _problems(config) -> list[str]:
    return [str(p) for p in verify_archive(config, None).problems]


# ---- HIGH-1: a `pending` field on a complete seal record ---------------------------------------------------

def _verify_all_names_problems(config, tmp_path, capsys) -> str:
    """`verify --all`'s output, once it has exited 3 (a traceback or another exit fails here, with its stderr)."""
    capsys.readouterr()
    code = seal_cli(config, tmp_path, "verify", "--all")
    out, err = capsys.readouterr()
    assert code == 3, (code, out, err[-2000:])
    return out


def test_forged_pending_on_a_sealed_day_hides_a_removed_entry(sealed, tmp_path, capsys) -> None:
    """A complete seal marked pending (dated far ahead: 'being made' forever) is checked all the same; the
    mark is named, and so is the entry removed with its objects."""
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    _seals(sealed).update_one({"day": DAY.isoformat(), "seq": 1}, {"$set": {"pending": FORGED}})
    _remove_entry_and_objects(sealed, victim)
    out = _verify_all_names_problems(sealed, tmp_path, capsys)
    assert victim["room"] in out and "removed from the index" in out, out
    assert f"PROBLEM seal {DAY}#1: a complete seal's record carries `pending`" in out, out


def test_the_seal_job_does_not_skip_a_forged_pending_forever(sealed, tmp_path, capsys) -> None:
    _seals(sealed).update_one({"day": DAY.isoformat(), "seq": 1}, {"$set": {"pending": FORGED}})
    newcomer = _late_entry(sealed)
    capsys.readouterr()
    code = seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat())
    out = capsys.readouterr().out
    assert code == 0 and "skipped" not in out and f"{DAY}: sealed (seal 2: 5 entries" in out, out
    assert newcomer["room"] in seals.stored_seal(seals.SealBook(sealed), seal_records(sealed)[-1]).document[
        "leaves"][-1]


def test_retrieve_fails_an_entry_changed_after_sealing_despite_a_forged_pending(sealed, keys, tmp_path) -> None:
    """`superseded_objects` is checked by the seal alone: with the day's seal record marked pending, the seal
    is still the one the entry is proven against, and the change fails the retrieval."""
    entry = index(sealed).find_one({}, sort=[("room", 1)])
    index(sealed).update_one({"_id": entry["_id"]}, {"$push": {"superseded_objects": "planted/v1/x.p7m"}})
    _seals(sealed).update_one({"day": DAY.isoformat(), "seq": 1}, {"$set": {"pending": FORGED}})
    seals._DOCUMENTS.clear()
    code = seal_cli(sealed, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]), "--out",
                    str(tmp_path / "case"), "--reason", "case 7")
    assert code == 3


def test_a_reservation_dated_in_the_future_is_named_and_taken_over(make_config, tmp_path, capsys) -> None:
    """A pending record (no seal made yet) whose `at` is ahead of the server's clock is no sealer at work:
    verify names it at once, and the next seal run takes it over rather than skipping the day forever."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    backdate(config)
    day = DAY.isoformat()
    _seals(config).insert_one({"day": day, "seq": 1, "pending": dict(FORGED, folder=f"~seals/{day}/seal-0001-x")})
    problems = _problems(config)
    assert len(problems) == 1 and problems[0].startswith(f"seal {day}#1: its reservation is dated in the future"), \
        problems
    (outcome,) = seals.seal_days(config, [day], ACTOR)
    assert outcome.action == "sealed" and outcome.seal["seq"] == 1, str(outcome)
    assert outcome.seal["abandoned"] == [f"~seals/{day}/seal-0001-x"]
    assert _problems(config) == []


def test_a_reservation_within_its_lease_is_still_left_to_its_sealer(make_config) -> None:
    """(The control: one dated now, within the lease and the clock skew, is a sealer at work.)"""
    config = make_config()
    day = DAY.isoformat()
    _seals(config).insert_one({"day": day, "seq": 1, "pending": {
        "owner": "elsewhere", "at": server_ms(_seals(config).database) + 30_000, "folder": f"~seals/{day}/seal-0001-x"}})
    assert _problems(config) == []
    assert seals.seal_days(config, [day], ACTOR)[0].action == "skipped"


# ---- HIGH-2: a removed seal explained as an `abandoned` folder of another ----------------------------------

def test_removed_latest_seal_explained_as_abandoned_hides_a_late_entry(sealed, tmp_path, capsys) -> None:
    """Seal 2 (a late entry) removed from the index, its folder pushed onto seal 1's `abandoned`, the late
    entry removed with its objects: named."""
    newcomer = _late_entry(sealed)
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    first, second = seal_records(sealed)
    folder = second["objects"]["document"]["key"][:-len(".json")]
    _seals(sealed).delete_one({"day": DAY.isoformat(), "seq": 2})
    _seals(sealed).update_one({"day": DAY.isoformat(), "seq": 1}, {"$push": {"abandoned": folder}})
    _remove_entry_and_objects(sealed, newcomer)
    out = _verify_all_names_problems(sealed, tmp_path, capsys)
    assert f"PROBLEM seal {DAY}#1: the index copy differs from the stored seal in abandoned" in out, out
    assert f"abandoned folder {folder} is not one of seal {DAY}#1's" in out, out
    assert f"object {folder}.json in " in out and "is not explained by the index" in out, out


def test_on_s3_under_object_lock_a_removed_seal_explained_as_abandoned_is_named(
        make_config, moto_endpoint, bucket, tsa) -> None:
    """The same on S3 with COMPLIANCE Object Lock (nothing can be deleted): seal 2's record removed, its folder
    pushed onto seal 1's `abandoned`, the late entry relabelled so that it is no leaf of any day."""
    config = make_config(storage__url=f"s3://{bucket}/archive", storage__endpoint_url=moto_endpoint,
                         signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=2)
    backdate(config)
    (first,) = seals.seal_days(config, [DAY.isoformat()], ACTOR)
    newcomer = _late_entry(config)
    (second,) = seals.seal_days(config, [DAY.isoformat()], ACTOR)
    assert second.action == "sealed" and second.seal["seq"] == 2
    folder = second.seal["objects"]["document"]["key"][:-len(".json")]
    _seals(config).delete_one({"day": DAY.isoformat(), "seq": 2})
    _seals(config).update_one({"day": DAY.isoformat(), "seq": 1}, {"$push": {"abandoned": folder}})
    index(config).update_one({"room": newcomer["room"]}, {"$set": {"status": "superseded"},
                                                          "$unset": {"archived_at": ""}})
    problems = _problems(config)
    assert any(p.startswith(f"seal {DAY}#1: abandoned folder {folder} is not one of") for p in problems), problems
    assert any(f"object {folder}.json in " in p and "not explained" in p for p in problems), problems


def _seals_without(monkeypatch, field: str) -> None:
    """Seals made as before FIELD was in their signed documents (`abandoned`: before it was signed;
    `previous_day`: before seals were chained)."""
    real = seals._document

    def without(*args, **kwargs):
        document = real(*args, **kwargs)
        document.pop(field)
        return document
    monkeypatch.setattr(seals, "_document", without)


def test_a_seal_signed_before_abandoned_was_signed_still_names_a_foreign_folder(make_config, monkeypatch) -> None:
    """A seal made before: its record's `abandoned` cannot be compared with its document, so each folder is
    checked itself: named for another seal, or holding another seal's signed document, it is named."""
    config = make_config()
    day = DAY.isoformat()
    _seals_without(monkeypatch, "abandoned")
    archive_samples(config, count=1)
    backdate(config)
    assert seals.seal_days(config, [day], ACTOR)[0].action == "sealed"
    _late_entry(config)
    (second,) = seals.seal_days(config, [day], ACTOR)
    assert "abandoned" not in seals.stored_seal(seals.SealBook(config), second.seal).document
    assert _problems(config) == []
    folder = second.seal["objects"]["document"]["key"][:-len(".json")]
    _seals(config).delete_one({"day": day, "seq": 2})
    _seals(config).update_one({"day": day, "seq": 1}, {"$push": {"abandoned": folder}})
    problems = _problems(config)
    assert f"seal {day}#1: abandoned folder {folder} is not one of seal {day}#1's (~seals/{day}/seal-0001-…)" \
        in problems, problems
    assert any(p.startswith(f"seal {day}#1: abandoned folder {folder} holds a signed seal {day}#2, which is not on "
                            "record") for p in problems), problems


def _seal_two_replaced_by_a_given_up_reservation(sealed) -> tuple[dict, str]:
    """Seal 2 (a late entry) removed from the index and replaced by a reservation given up naming seal 2's folder
    as its own; the late entry removed with its objects. The late entry and the folder."""
    day = DAY.isoformat()
    newcomer = _late_entry(sealed)
    (second,) = seals.seal_days(sealed, [day], ACTOR)
    folder = second.seal["objects"]["document"]["key"][:-len(".json")]
    _seals(sealed).delete_one({"day": day, "seq": 2})
    _seals(sealed).insert_one({"day": day, "seq": 2, "pending": {"owner": "x", "at": 0, "folder": folder}})
    _remove_entry_and_objects(sealed, newcomer)
    return newcomer, folder


def test_a_takeover_keeps_what_the_sealer_it_took_over_signed(sealed, monkeypatch) -> None:
    """Seal 2 (a late entry) removed from the index and replaced by a reservation given up, naming seal 2's
    folder as its own; the late entry removed: the next seal run refuses to seal the day without it (the
    signed document under that folder holds it), and verify names the reservation meanwhile."""
    day = DAY.isoformat()
    newcomer, folder = _seal_two_replaced_by_a_given_up_reservation(sealed)
    assert any(p.startswith(f"seal {day}#2: left pending") for p in _problems(sealed))
    (outcome,) = seals.seal_days(sealed, [day], ACTOR)
    assert outcome.action == "refused", str(outcome)
    assert any(newcomer["room"] in p and folder in p for p in outcome.problems), outcome.problems
    assert "pending" in seal_records(sealed)[-1]  # nothing completed


def test_verify_names_a_seal_that_dropped_what_the_sealer_it_took_over_signed(sealed, monkeypatch) -> None:
    """The same take-over made by a sealer that did not check the folder (one from before): verify names it."""
    day = DAY.isoformat()
    newcomer, folder = _seal_two_replaced_by_a_given_up_reservation(sealed)
    with monkeypatch.context() as unchecked:
        unchecked.setattr(seals, "folder_problems", lambda *args: [])
        (outcome,) = seals.seal_days(sealed, [day], ACTOR)
    assert outcome.action == "sealed" and outcome.seal["abandoned"] == [folder], str(outcome)
    problems = _problems(sealed)
    assert [p for p in problems if "abandoned" in p] == [
        f"seal {day}#2: abandoned folder {folder} holds this seal as signed by a sealer taken over, with entries "
        f"since removed or changed: {newcomer['room']} v1 (archived)"], problems


# ---- MEDIUM-2: a seal record edited by hand ----------------------------------------------------------------

@pytest.mark.parametrize("edit", [
    {"$set": {"pending": {"owner": "x", "at": "yesterday"}}},
    {"$set": {"pending": "x"}},
    {"$unset": {"objects": ""}},
    {"$set": {"objects.document": None}},
    {"$set": {"audit_head": "x"}},
    {"$set": {"day": "9999-12-31"}},
    {"$set": {"day": "not-a-day"}},
    {"$set": {"abandoned": "x"}},
    {"$set": {"seq": "1"}},
])
def test_a_seal_record_edited_by_hand_is_named_not_a_crash(sealed, tmp_path, capsys, edit) -> None:
    """Named (exit 3), never a traceback (exit 1) that stops every other check of verify --all."""
    _seals(sealed).update_one({"day": DAY.isoformat(), "seq": 1}, edit)
    out = _verify_all_names_problems(sealed, tmp_path, capsys)
    assert "PROBLEM seal " in out, out


@pytest.mark.parametrize("edit, named", [
    ({"$unset": {"objects": ""}}, "malformed index record (objects: "),
    ({"$set": {"objects.document": None}}, "malformed index record (objects.document: "),
    ({"$set": {"pending": {"owner": "x", "at": "yesterday"}}}, None),
])
def test_a_malformed_seal_record_fails_its_day_only(sealed, edit, named) -> None:
    """The seal job: the day of a record edited by hand fails, named; the days after it are sealed."""
    _seals(sealed).update_one({"day": DAY.isoformat(), "seq": 1}, edit)
    if named is None:  # a record that looks pending (completion fields gone) with an unreadable `at`
        _seals(sealed).update_many({"day": DAY.isoformat()}, {"$unset": {
            k: "" for k in ("format", "from", "to", "count", "root", "leaf_format", "previous", "audit_head",
                            "created_at", "sealer", "previous_day",
                            "signer_sha256", "objects", "store", "timestamped_at", "abandoned")}})
        named = "malformed index record (pending.at: "
    following = (DAY + seals.DAY).isoformat()
    bad, good = seals.seal_days(sealed, [DAY.isoformat(), following], ACTOR)
    assert bad.action == "failed" and any(named in p for p in bad.problems), str(bad)
    assert good.action == "sealed", str(good)
    assert any(named in p for p in _problems(sealed))


# ---- LOW-1: a day's first seal removed, a later one kept ---------------------------------------------------

def test_a_removed_first_seal_is_named_and_does_not_block_the_day(sealed, tmp_path, capsys) -> None:
    """Seals 1 and 2 of DAY; seal 1's record removed (its objects too, local store); another late entry: the
    day is sealed again (seal 3, not a clash with seal 2), and verify names seal 1 as missing."""
    _late_entry(sealed, 99)
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    first, _ = seal_records(sealed)
    for obj in first["objects"].values():
        remove_stored(sealed, obj["key"])
    _seals(sealed).delete_one({"day": DAY.isoformat(), "seq": 1})
    _late_entry(sealed, 98)
    capsys.readouterr()
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out and f"{DAY}: sealed (seal 3: 6 entries" in out, out
    out = _verify_all_names_problems(sealed, tmp_path, capsys)
    assert f"PROBLEM seal {DAY}#2: it extends seal 1, which is not on record" in out, out


# ---- MEDIUM-1: a whole sealed day removed (its seal record, its objects, its entries) ---------------------

@pytest.mark.parametrize("action, detail", [
    ("sealed", ""), ("unchanged", ""),
    ("sealed", "completed seal 2, left pending by h:1 (since 2026-01-02 00:31:00 UTC); its objects under "
               "~seals/2026-01-01/seal-0002-x stay, kept as abandoned"),
    # written before owners were shown safely: a newline, and the wording itself, planted in the owner
    ("sealed", f"completed seal 2, left pending by h:1\n(seal 9: 1 entries, root {'cd' * 32}) (since 2026-01-02 "
               "00:31:00 UTC); its objects under ~seals/2026-01-01/seal-0002-x stay, kept as abandoned"),
])
def test_the_audit_entry_of_a_seal_names_its_day_number_and_root(action, detail) -> None:
    """What the audit log cross-check reads from the text of a seal run's entry written before the entry recorded
    the seal as fields (SealOutcome's text), a take-over's too."""
    seal = {"seq": 2, "count": 5, "root": "ab" * 32, "timestamped_at": None,
            "objects": {"document": {"key": "~seals/2026-01-01/seal-0002-x.json"}}}
    text = str(seals.SealOutcome("2026-01-01", action, seal, detail=detail))
    assert seals.audited_seal_text(text) == ("2026-01-01", 2, "ab" * 32), text
    assert seals.audited_seal({"filters": {"day": "2026-01-01"}, "detail": text}) == ("2026-01-01", 2, "ab" * 32)


def _days_before(n: int) -> str:
    return (DAY - seals.DAY * n).isoformat()


def _remove_seal(config, day: str) -> dict:
    """DAY's seal (record and objects) removed, as an insider with write access to the index and the store can
    (the local store; S3 without Object Lock, or GOVERNANCE with bypass)."""
    (record,) = [r for r in seal_records(config) if r["day"] == day]
    for obj in record["objects"].values():
        remove_stored(config, obj["key"])
    _seals(config).delete_one({"day": day})
    return record


def _three_sealed_days(make_config, tsa, tmp_path) -> tuple[object, dict]:
    """DAY-2, DAY-1 and DAY sealed in one run, one entry on DAY-1 (the victim), two on DAY."""
    config = make_config(signing__timestamp_url=tsa.url)
    with built_on(DAY - seals.DAY * 2):
        archive_samples(config, count=3)
    backdate(config)
    victim = index(config).find_one({}, sort=[("room", 1)])
    backdate(config, [victim["room"]], day=DAY - seals.DAY)
    assert seal_cli(config, tmp_path, "seal", "--from", _days_before(2), "--to", DAY.isoformat()) == 0
    return config, victim


def test_a_whole_sealed_day_removed_with_its_seal_objects_is_named(make_config, tsa, tmp_path, capsys) -> None:
    """DAY-1's seal and its entry (with their objects) removed: the next day's seal names it as the one it
    follows, and the audit log's entry of its seal names it too."""
    config, victim = _three_sealed_days(make_config, tsa, tmp_path)
    link = seals.stored_seal(seals.SealBook(config), seal_records(config)[-1]).document["previous_day"]
    record = _remove_seal(config, _days_before(1))
    assert link == {"day": _days_before(1), "seq": 1, "document_sha256": record["objects"]["document"]["sha256"]}
    _remove_entry_and_objects(config, victim)
    out = _verify_all_names_problems(config, tmp_path, capsys)
    assert (f"PROBLEM seal {DAY}#1: it follows seal {_days_before(1)}#1, the latest of the day sealed before it (its "
            "signed document says so), which is not on record: a sealed day removed") in out, out
    assert f"PROBLEM seal {_days_before(1)}#1: the audit log records it (entry " in out, out
    assert f"root {record['root']}), but the index holds no such seal (removed?)" in out, out
    assert "between sealed days" not in out, out  # (the chain speaks for chained seals)


def test_a_whole_sealed_day_removed_and_sealed_again_is_named(make_config, tsa, tmp_path, capsys) -> None:
    """The same, then the day sealed again without its entry (by the seal job, say): the next day's seal names
    another document, the audit log another root."""
    config, victim = _three_sealed_days(make_config, tsa, tmp_path)
    record = _remove_seal(config, _days_before(1))
    _remove_entry_and_objects(config, victim)
    assert seal_cli(config, tmp_path, "seal", "--from", _days_before(1), "--to", _days_before(1)) == 0
    (again,) = [r for r in seal_records(config) if r["day"] == _days_before(1)]
    out = _verify_all_names_problems(config, tmp_path, capsys)
    assert (f"PROBLEM seal {DAY}#1: it follows seal {_days_before(1)}#1, the latest of the day sealed before it (its "
            f"signed document says so), with document SHA-256 {record['objects']['document']['sha256']}, but that "
            f"seal's record names {again['objects']['document']['sha256']} (removed and sealed again?)") in out, out
    assert f"root {record['root']}), but its record holds root {again['root']} (removed and sealed again?)" in out, out


def test_a_day_removed_between_seals_made_before_chaining_is_named_as_a_gap(make_config, tsa, tmp_path, capsys,
                                                                           monkeypatch) -> None:
    """Seals made before seals were chained: the day missing between sealed days is named (and by the audit log)."""
    _seals_without(monkeypatch, "previous_day")
    config, victim = _three_sealed_days(make_config, tsa, tmp_path)
    _remove_seal(config, _days_before(1))
    _remove_entry_and_objects(config, victim)
    out = _verify_all_names_problems(config, tmp_path, capsys)
    assert (f"PROBLEM {_days_before(1)}: not sealed, between sealed days {_days_before(2)} and {DAY}: a sealed day "
            "may have been removed (its seal record and objects); if never sealed (a failed seal run, or days sealed "
            f"by hand around it), `archiver seal --from {_days_before(1)} --to {_days_before(1)}` seals it") in out, out
    assert f"PROBLEM seal {_days_before(1)}#1: the audit log records it (entry " in out, out
    assert "it follows seal" not in out, out


def test_the_newest_sealed_day_removed_is_named_by_the_audit_log(sealed, tmp_path, capsys) -> None:
    """No later seal: no gap to see. The audit log's entry of the seal names it."""
    assert seal_cli(sealed, tmp_path, "seal", "--from", _days_before(1), "--to", _days_before(1)) == 0
    record = _remove_seal(sealed, DAY.isoformat())
    _remove_entry_and_objects(sealed, index(sealed).find_one({}, sort=[("room", 1)]))
    out = _verify_all_names_problems(sealed, tmp_path, capsys)
    assert f"PROBLEM seal {DAY}#1: the audit log records it (entry " in out, out
    assert f"root {record['root']}), but the index holds no such seal (removed?)" in out, out
    assert "between sealed days" not in out, out


def test_a_removed_seal_made_again_without_an_entry_is_named_by_the_audit_log(sealed, tmp_path, capsys) -> None:
    """DAY's seal and an entry removed, then DAY sealed again (by the seal job, say): a seal 1 is on record, but
    not the one the audit log recorded."""
    record = _remove_seal(sealed, DAY.isoformat())
    _remove_entry_and_objects(sealed, index(sealed).find_one({}, sort=[("room", 1)]))
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    (again,) = seal_records(sealed)
    assert again["seq"] == 1 and again["count"] == 3
    out = _verify_all_names_problems(sealed, tmp_path, capsys)
    assert (f"PROBLEM seal {DAY}#1: the audit log records it (entry ") in out, out
    assert f"root {record['root']}), but its record holds root {again['root']} (removed and sealed again?)" in out, out


def _an_honest_gap(sealed, tmp_path) -> None:
    """DAY-3 sealed by hand besides DAY; a seal run of DAY-2 that failed (the authority unreachable), in the audit
    log; DAY-2 and DAY-1 never sealed."""
    assert seal_cli(sealed, tmp_path, "seal", "--from", _days_before(3), "--to", _days_before(3)) == 0
    broken = sealed.with_overrides(signing__timestamp_url="http://127.0.0.1:9/")  # nothing listens there
    assert seal_cli(broken, tmp_path, "seal", "--from", _days_before(2), "--to", _days_before(2)) == 1


def test_days_never_sealed_between_chained_seals_are_no_problem(sealed, tmp_path) -> None:
    """DAY's seal names no earlier day (none was sealed when it was made): the days before it that are not sealed
    were never sealed, and an honest archive is clean."""
    _an_honest_gap(sealed, tmp_path)
    assert verify_archive(sealed, None).problems == []


def test_days_never_sealed_between_seals_made_before_chaining_are_named_until_sealed(
        make_config, tsa, tmp_path, capsys, monkeypatch) -> None:
    """The same with seals made before seals were chained: the gap cannot be told from a removed day, so it is
    named (one range, with the command that seals it); once sealed, verify --all is clean."""
    _seals_without(monkeypatch, "previous_day")
    config = seal_four(make_config, tsa, tmp_path, audited=True)
    _an_honest_gap(config, tmp_path)
    out = _verify_all_names_problems(config, tmp_path, capsys)
    assert (f"PROBLEM {_days_before(2)} to {_days_before(1)}: not sealed (2 days), between sealed days "
            f"{_days_before(3)} and {DAY}: a sealed day may have been removed") in out, out
    assert f"`archiver seal --from {_days_before(2)} --to {_days_before(1)}` seals them" in out, out
    assert "audit log records" not in out, out
    assert seal_cli(config, tmp_path, "seal", "--from", _days_before(2), "--to", _days_before(1)) == 0
    assert verify_archive(config, None).problems == []


# ---- LOW-2: `verify ROOM` of a room removed from a sealed day ------------------------------------------------

def test_verify_room_of_a_room_removed_from_a_sealed_day_says_so(sealed, tmp_path, capsys) -> None:
    """The room named on the command line, removed with its objects after its day was sealed."""
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    _remove_entry_and_objects(sealed, victim)
    capsys.readouterr()
    code = seal_cli(sealed, tmp_path, "verify", victim["room"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert (f"PROBLEM {victim['room']}: sealed on {DAY} (seal 1: version 1) and removed from the archive index "
            "since") in out, out


def test_verify_room_of_a_room_never_archived_does_not_say_sealed(sealed, tmp_path, capsys) -> None:
    capsys.readouterr()
    code = seal_cli(sealed, tmp_path, "verify", "no-such-room")
    out = capsys.readouterr().out
    assert code == 3 and "PROBLEM no-such-room: not in the archive index" in out and "sealed on" not in out, out


def test_verify_room_looks_in_the_days_its_job_names_and_the_newest_sealed_days_only(sealed, monkeypatch) -> None:
    """The lookup is bounded (docs/seals.md): with no recent sealed day to read, a room whose job names no sealed
    day reads as not in the index; once its job's finish is dated on DAY, its seal is found there."""
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    _remove_entry_and_objects(sealed, victim)
    jobs = connect(sealed["mongodb.uri"])[sealed["index.database"]][sealed["index.jobs"]]
    jobs.update_one({"_id": victim["room"]}, {"$unset": {"ended_at": ""}})
    monkeypatch.setattr(seals, "SEALED_DAYS_SEARCHED", 0)
    assert seals.sealed_rooms(sealed, [victim["room"]]) == {}
    at = dt.datetime.combine(DAY, dt.time(10), dt.timezone.utc)
    assert jobs.update_one({"_id": victim["room"]}, {"$set": {"finished_at": int(at.timestamp() * 1000)}}).matched_count
    assert seals.sealed_rooms(sealed, [victim["room"], "no-such-room"]) == {
        victim["room"]: f"sealed on {DAY} (seal 1: version 1) and removed from the archive index since"}


# ---- a newline in index text (a pending record's owner) in a take-over's audit entry (review today3, 1.) ---------

def test_a_take_over_entry_with_a_newline_in_the_owner_is_still_read() -> None:
    seal = {"seq": 1, "count": 4, "root": "ab" * 32, "timestamped_at": None,
            "objects": {"document": {"key": "~seals/2026-01-01/seal-0001-x.json"}}}
    pending = {"owner": "host:1\nplanted", "at": 0, "folder": "f\x1b[2K", "failed": "store\nerror"}
    detail = seals._taken_over({"seq": 1, "pending": pending})
    assert "host:1[U+000A]planted" in detail and "f[U+001B][2K" in detail and "store[U+000A]error" in detail, detail
    text = str(seals.SealOutcome("2026-01-01", "sealed", seal, detail=detail))
    assert "\n" not in text and "\x1b" not in text, text
    assert seals.audited_seal_text(text) == ("2026-01-01", 1, "ab" * 32), text
    for said in (seals._being_made({"seq": 1, "pending": pending}),
                 seals._left_pending({"day": "2026-01-01", "seq": 1, "pending": pending})):
        assert "\n" not in said and "\x1b" not in said, said


def _plant_given_up_reservation(config, day: str, owner: str) -> None:
    """Planted by an insider before the seal job runs: a reservation of DAY's seal 1, given up long ago."""
    _seals(config).insert_one({"day": day, "seq": 1, "pending": {
        "owner": owner, "at": 0, "sealer": {"os_user": "x", "host": "y"},
        "folder": f"{seals.folder_prefix(day, 1)}20260101T000000000000Z"}})


@pytest.mark.parametrize("owner", ["sealer-7 (stalled)", "sealer-7\n(stalled)"])
def test_the_newest_sealed_day_removed_after_a_planted_take_over_is_named(make_config, tsa, tmp_path, capsys,
                                                                         owner) -> None:
    """The seal job takes the planted reservation over and seals DAY; then DAY's seal record, objects and entries
    are removed. The audit log's entry of the seal names it, a newline in the owner or not."""
    config = make_config(signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=3)
    backdate(config)
    day = DAY.isoformat()
    _plant_given_up_reservation(config, day, owner)
    assert seal_cli(config, tmp_path, "seal", "--from", day, "--to", day) == 0  # taken over: sealed
    record = _remove_seal(config, day)
    for entry in list(index(config).find({})):
        _remove_entry_and_objects(config, entry)
    out = _verify_all_names_problems(config, tmp_path, capsys)
    assert f"PROBLEM seal {day}#1: the audit log records it (entry " in out, out
    assert f"root {record['root']}), but the index holds no such seal (removed?)" in out, out


@pytest.mark.parametrize("owner", ["sealer-7 (stalled)", "sealer-7\n(stalled)"])
def test_a_middle_day_removed_before_the_next_seal_is_named(make_config, tsa, tmp_path, capsys, owner) -> None:
    """DAY-1 (sealed as a take-over of the planted reservation) removed before DAY is sealed: DAY's seal then names
    DAY-2 as the day before it (the chain is read from the index as the insider left it), the gap check trusts
    that chain, and only the audit log's entry of DAY-1's seal names it."""
    config = make_config(signing__timestamp_url=tsa.url)
    with built_on(DAY - seals.DAY * 2):
        archive_samples(config, count=3)
    backdate(config)
    rooms = sorted(e["room"] for e in index(config).find({}))
    backdate(config, [rooms[0]], day=DAY - seals.DAY * 2)
    backdate(config, [rooms[1]], day=DAY - seals.DAY)
    first, victim_day = _days_before(2), _days_before(1)
    assert seal_cli(config, tmp_path, "seal", "--from", first, "--to", first) == 0
    _plant_given_up_reservation(config, victim_day, owner)
    assert seal_cli(config, tmp_path, "seal", "--from", victim_day, "--to", victim_day) == 0
    _remove_seal(config, victim_day)
    _remove_entry_and_objects(config, index(config).find_one({"room": rooms[1]}))
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    out = _verify_all_names_problems(config, tmp_path, capsys)
    assert f"PROBLEM seal {victim_day}#1: the audit log records it (entry " in out, out
    assert "it follows seal" not in out and "between sealed days" not in out, out  # (docs: the audit log alone)


def _seal_entries(config) -> list[dict]:
    return list(connect(config["mongodb.uri"])[config["index.database"]][config["index.audit"]].find(
        {"action": "seal"}, {"_id": 0}).sort("seq", 1))


def test_a_seal_runs_audit_entry_records_the_seal_as_fields_the_chain_covers(sealed) -> None:
    """Day, number and root are the entry's `filters` (what the cross-check reads), covered by its hash: changed
    there, the chain breaks."""
    (entry,) = _seal_entries(sealed)
    (record,) = seal_records(sealed)
    assert entry["outcome"] == "ok" and entry["filters"] == {"day": DAY.isoformat(), "seq": 1, "root": record["root"]}
    assert seals.audited_seal(dict(entry, detail="")) == (DAY.isoformat(), 1, record["root"])
    log = seals.SealBook(sealed).audit
    assert log.verify() == []
    log.collection.update_one({"seq": entry["seq"]}, {"$set": {"filters.root": "cd" * 32}})
    assert [p.seq for p in log.verify()] == [entry["seq"]]


def test_a_take_over_with_a_newline_in_the_owner_is_audited_shown_safely(make_config, tsa, tmp_path) -> None:
    config = make_config(signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=1)
    backdate(config)
    _plant_given_up_reservation(config, DAY.isoformat(), "sealer-7\n(stalled)")
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    (entry,) = _seal_entries(config)
    assert "left pending by sealer-7[U+000A](stalled)" in entry["detail"] and "\n" not in entry["detail"], entry


@pytest.mark.parametrize("filters, detail", [
    ({"day": DAY.isoformat()}, "garbled"),  # an older entry (no fields) whose text names no seal
    ({"day": DAY.isoformat(), "seq": "1", "root": "ab" * 32}, f"{DAY}: sealed (seal 1: 4 entries, root {'ab' * 32}"),
])
def test_a_seal_entry_recorded_ok_that_names_no_seal_is_named(sealed, tmp_path, capsys, filters, detail) -> None:
    """Never skipped silently: it could be the only record of a sealed day removed. (Fields in a shape no sealer
    writes are not read around by the text.)"""
    seals.SealBook(sealed).audit.record("seal", ACTOR, outcome="ok", filters=filters, detail=detail)
    (entry,) = _seal_entries(sealed)[-1:]
    out = _verify_all_names_problems(sealed, tmp_path, capsys)
    assert (f"PROBLEM audit log: entry {entry['seq']} ({entry['at']}) records a seal run as ok, but says of no seal "
            "which day, number and root it has") in out, out
