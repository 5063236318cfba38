"""A command's own free text (filters, --reason, --case, --actor) goes through the redaction rules before anything
records it (archiver/commands/stated.py; review court C23): the audit log is hash-chained and append-only, and the
files handed over repeat a reason."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import pytest
from bson import json_util

from archiver.cli import main
from archiver.holds import open_holds
from archiver.mongo import connect
from archiver.samples import make_chat
from archiver.pipeline import Archiver
from conftest import write_toml
from retention_helpers import RULES, customer_of, index
from retrieval_helpers import CLI_KEYS, audit, search_key
from test_pipeline import recent_ms, seed

CARD = "4111 1111 1111 1111"
GROUPED = {"spaced": CARD, "dashed": "4111-1111-1111-1111", "dotted": "4111.1111.1111.1111",
           "tabbed": "4111\t1111\t1111\t1111", "zero-width": "4111\u200b1111\u200b1111\u200b1111",
           "whole": "4111111111111111"}
CARD_DIGITS = ("1111 1111 1111", "1111-1111-1111", "1111.1111.1111", "1111\t1111\t1111", "4111111111111111",
               "1111\u200b1111\u200b1111")


def _held_digits(text: str) -> list[str]:
    """The card's unmasked groups TEXT still holds (none: masked or absent)."""
    return [digits for digits in CARD_DIGITS if digits in text]


def _config(make_config, tmp_path, **overrides):
    return make_config(search__key_file=str(search_key(tmp_path)), storage__object_lock_mode="",
                       retention__rules=RULES, **overrides)


@pytest.fixture
def archived(make_config, tmp_path):
    """Two chats: ROOM_0 holds "order 4111 and ticket 1111" (the pieces of a grouped card, not the card)."""
    config = _config(make_config, tmp_path)
    rng, chats = random.Random(3), []
    for i, text in enumerate(("order 4111 and ticket 1111", "nothing to see")):
        chat, contact = make_chat(rng, messages=3, start_ms=recent_ms(60 - i), room=f"ROOM_{i}")
        for m in chat["messages"]:
            if m["data"].get("content", {}).get("text") is not None:
                m["data"]["content"]["text"] = text
        chats.append((chat, contact))
    seed(config, chats)
    assert Archiver(config).run_pass().archived == 2
    return config, [chat for chat, _ in chats]


def _cli(config, tmp_path: Path, *argv: str) -> int:
    keys = (*CLI_KEYS, "signing.certificate", "signing.key", "source.database", "search.key_file",
            "storage.object_lock_mode", "redaction.enabled", "redaction.rules")
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in keys})
    toml.write_text(toml.read_text() + "[retention.rules.default]\nsource_days = 30\narchive_days = 365\n")
    return main(["--config", str(toml), *argv])


def _recorded(config) -> str:
    """Everything the index database holds that a command recorded: the audit log and the holds."""
    return json.dumps([audit(config), open_holds(config).listing(everything=True)], default=str, ensure_ascii=False)


COMMANDS = {"search": ["search"], "bundle": ["retrieve", "--bundle", "{tmp}/case.zip", "--key", "{key}", "--reason",
                                             "case 7", "--no-progress"],
            "hold": ["hold", "place", "--case", "K", "--reason", "r"]}


@pytest.mark.parametrize("typed", list(GROUPED.values()), ids=list(GROUPED))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_card_number_in_a_text_filter_is_refused_however_it_is_grouped(archived, keys, tmp_path, capsys,
                                                                         command, typed) -> None:
    """Grouped as people write it, a card was searched word by word (a false hit on ROOM_0, which holds only
    "4111" and "1111") and the audit log kept the full number. Refused, exit 2, naming the option, the value
    not repeated; nothing recorded, no bundle written."""
    config, _ = archived
    argv = [a.format(tmp=tmp_path, key=keys["legal.key.pem"]) for a in COMMANDS[command]]
    assert _cli(config, tmp_path, *argv, "--text", f"refund {typed}") == 2
    err = capsys.readouterr().err
    assert "--text holds a card number" in err and "nothing done" in err, err
    assert not _held_digits(err) and "4111" not in err, err
    assert audit(config) == [] and open_holds(config).listing(everything=True) == []
    assert not (tmp_path / "case.zip").exists()


@pytest.mark.parametrize("option", ["--service", "--channel", "--type"])
def test_a_card_number_in_another_text_filter_is_refused(archived, tmp_path, capsys, option) -> None:
    config, _ = archived
    assert _cli(config, tmp_path, "search", option, f"shop {CARD}") == 2
    err = capsys.readouterr().err
    assert f"{option} holds a card number" in err and "4111" not in err, err
    assert audit(config) == []


@pytest.mark.parametrize("typed", ["4111 1111", "4111 1111 1111 1112"])  # no card: too short, or not Luhn-valid
def test_a_number_that_is_no_card_is_searched_and_recorded_as_typed(archived, tmp_path, capsys, typed) -> None:
    config, chats = archived
    assert _cli(config, tmp_path, "search", "--text", typed, "--json") == 0
    found = [e["room"] for e in json.loads(capsys.readouterr().out)]
    assert found == (["ROOM_0"] if typed == "4111 1111" else [])
    assert [e["filters"] for e in audit(config)] == [{"text": typed}]


def test_identifiers_are_not_read_by_the_rules(make_config, tmp_path, capsys) -> None:
    """A customer's numeric id can pass Luhn, and the archive keeps ids as they are: searched and recorded as typed."""
    config = _config(make_config, tmp_path)
    chat, contact = make_chat(random.Random(8), messages=3, start_ms=recent_ms(30))
    customer = customer_of(chat)
    for m in chat["messages"]:
        if m["data"]["content"]["user"]["id"] == customer:
            m["data"]["content"]["user"]["id"] = "4111111111111111"
    contact["userID"] = "4111111111111111"
    contact["users"] = {"4111111111111111" if k == customer else k: v for k, v in contact["users"].items()}
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    assert _cli(config, tmp_path, "search", "--customer", "4111111111111111", "--json") == 0
    assert [e["room"] for e in json.loads(capsys.readouterr().out)] == [chat["room"]]
    assert [e["filters"] for e in audit(config)] == [{"customer": "4111111111111111"}]


def test_a_text_the_rules_cannot_be_applied_to_is_refused_unrecorded(archived, tmp_path, capsys, monkeypatch) -> None:
    from archiver.redaction import Redactor
    from archiver.transcript import InvalidChat

    def fails(self, text):
        raise InvalidChat("(an argument): redaction rule 'card' could not be applied")
    monkeypatch.setattr(Redactor, "screened", fails)
    config, _ = archived
    assert _cli(config, tmp_path, "search", "--room", "ROOM_0", "--actor", "someone") == 2
    assert "--actor: the redaction rules could not be applied to it" in capsys.readouterr().err
    assert audit(config) == []


def test_a_rule_configured_beside_the_card_rule_refuses_its_matches_too(make_config, tmp_path, capsys) -> None:
    config = _config(make_config, tmp_path, redaction__rules=["card", "email"])
    assert _cli(config, tmp_path, "search", "--text", "mail mario.rossi@example.com") == 2
    err = capsys.readouterr().err
    assert "--text holds an e-mail address" in err and "mario" not in err, err
    assert audit(config) == []


def test_with_redaction_off_a_card_number_is_still_refused_and_masked(make_config, tmp_path, capsys) -> None:
    """The audit log can never be edited: the card rule applies to what a command records whatever the settings."""
    config = _config(make_config, tmp_path, redaction__enabled=False)
    assert _cli(config, tmp_path, "search", "--text", CARD) == 2
    assert "--text holds a card number" in capsys.readouterr().err
    assert _cli(config, tmp_path, "search", "--actor", f"paralegal, card {CARD}") == 0
    assert "--actor: a card number masked" in capsys.readouterr().err
    assert [e["actor"]["on_behalf_of"] for e in audit(config)] == ["paralegal, card 4111 11•• •••• 1111"]


@pytest.mark.parametrize("typed", list(GROUPED.values()), ids=list(GROUPED))
def test_a_card_number_in_a_reason_is_masked_in_the_audit_log_and_the_files_handed_over(archived, keys, tmp_path,
                                                                                        capsys, typed) -> None:
    """--reason is masked, not refused: the retrieval is made, the reason still reads, and says so on stderr."""
    config, _ = archived
    out = tmp_path / "out"
    assert _cli(config, tmp_path, "retrieve", "ROOM_1", "--key", str(keys["legal.key.pem"]), "--out", str(out),
                "--reason", f"dispute on card {typed}", "--actor", f"for card {typed}") == 0
    captured = capsys.readouterr()
    assert "note: --reason: a card number masked before it was recorded" in captured.err
    assert "note: --actor: a card number masked" in captured.err
    assert not _held_digits(captured.out + captured.err)
    reasons = {e["reason"] for e in audit(config)}
    assert len(reasons) == 1 and reasons.pop().startswith("dispute on card 4111") and not _held_digits(_recorded(config))
    written = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*.json"))
    assert "dispute on card 4111" in written and "•" in written and not _held_digits(written)


def test_a_card_number_in_a_bundle_reason_is_in_no_file_of_the_bundle(archived, keys, tmp_path, capsys) -> None:
    config, _ = archived
    bundle = tmp_path / "case.zip"
    assert _cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "ROOM_0", "ROOM_1", "--key",
                str(keys["legal.key.pem"]), "--reason", f"dispute on card {CARD}", "--no-progress") == 0
    assert "--reason: a card number masked" in capsys.readouterr().err
    with zipfile.ZipFile(bundle) as zf:
        texts = {name: zf.read(name).decode("utf-8", "replace") for name in zf.namelist()
                 if name.endswith((".json", ".txt"))}
    assert any("dispute on card 4111 11" in text for text in texts.values())
    assert not [name for name, text in texts.items() if _held_digits(text)]
    assert not _held_digits(_recorded(config))


def test_a_hold_placed_with_a_card_number_in_its_case_and_reason_is_masked_and_released_as_typed(
        archived, tmp_path, capsys) -> None:
    config, _ = archived
    case = "Rossi v. Shop, card 4111-1111-1111-1111"
    assert _cli(config, tmp_path, "hold", "place", "--room", "ROOM_0", "--case", case,
                "--reason", f"card {CARD} disputed") == 0
    err = capsys.readouterr().err
    assert "--case: a card number masked" in err and "--reason: a card number masked" in err
    [hold] = open_holds(config).listing(everything=True)
    assert hold["case"] == "Rossi v. Shop, card 4111-11••-••••-1111" and hold["reason"] == "card 4111 11•• •••• 1111 disputed"
    assert index(config).find_one({"room": "ROOM_0"})["legal_hold"] is True
    assert _cli(config, tmp_path, "hold", "release", "--case", case, "--reason", "settled") == 0  # the same masking
    assert [h["active"] for h in open_holds(config).listing(everything=True)] == [False]
    assert not _held_digits(_recorded(config))


def test_a_hold_placed_before_its_case_was_masked_is_released_by_its_name_as_typed(archived, tmp_path, capsys) -> None:
    """A case name stored in clear (placed before --case was masked) masks to what --case now is: released."""
    from archiver.search import SearchFilters

    config, _ = archived
    case = f"Rossi v. Shop, card {CARD}"
    open_holds(config).place(SearchFilters(room="ROOM_0"), case, "r", {"user": "u", "host": "h"}, lambda hold: None)
    assert _cli(config, tmp_path, "hold", "release", "--case", "Rossi v. Shop", "--reason", "settled") == 2
    assert "no active hold" in capsys.readouterr().err  # another case's name is not enough
    assert _cli(config, tmp_path, "hold", "release", "--case", case, "--reason", "settled") == 0
    assert "released 1 hold(s)" in capsys.readouterr().out
    assert [h["active"] for h in open_holds(config).listing(everything=True)] == [False]
    assert [e["filters"]["case"] for e in audit(config)] == ["Rossi v. Shop, card 4111 11•• •••• 1111"] * 2


def test_a_card_number_in_an_erasure_reason_is_masked_in_the_audit_log_and_the_tombstone(archived, tmp_path,
                                                                                         capsys) -> None:
    config, chats = archived
    assert _cli(config, tmp_path, "erase", "--customer", customer_of(chats[1]),
                "--reason", f"GDPR request, refund to card {CARD}") == 0
    assert "--reason: a card number masked" in capsys.readouterr().err
    [erase] = [e for e in audit(config) if e["action"] == "erase"]
    assert erase["reason"] == "GDPR request, refund to card 4111 11•• •••• 1111"
    assert index(config).find_one({"room": "ROOM_1"})["status"] == "deleted"
    db = connect(config["mongodb.uri"])[config["index.database"]]  # the tombstone, the run and its report too
    holding = [name for name in db.list_collection_names()
               if any(_held_digits(json_util.dumps(doc, ensure_ascii=False)) for doc in db[name].find())]
    assert holding == [] and "refund to card 4111 11" in json_util.dumps(list(db[config["index.retention_runs"]].find()),
                                                                          ensure_ascii=False)
