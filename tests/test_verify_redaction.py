"""archiver verify --key PEM --redaction: archived versions holding what today's redaction rules mask are named.

A version archived with redaction off, or before a detector learnt a form of card number, keeps that number
for as long as its lock lasts; the legal team must be able to find every such version without reading them.
"""

from __future__ import annotations

import json
import random

import pytest

from archiver.cli import main
from archiver.envelope import RecipientKey
from archiver.integrity import verify_archive
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from conftest import write_toml
from retrieval_helpers import CLI_KEYS, audit, index
from test_pipeline import recent_ms, seed

CARD = "4111 1111 1111 1111"


def _chats(count: int, texts: dict[int, str]) -> list[tuple[dict, dict]]:
    """COUNT chats; chat I's first text message says TEXTS[I] when given."""
    rng = random.Random(11)
    chats = []
    for i in range(count):
        chat, contact = make_chat(rng, messages=6, language="en", start_ms=recent_ms(30 - i))
        if i in texts:
            message = next(m for m in chat["messages"] if "text" in m["data"]["content"])
            message["data"]["content"]["text"] = texts[i]
        chats.append((chat, contact))
    return chats


def _archive(config, chats) -> list[dict]:
    seed(config, chats)
    assert Archiver(config).run_pass().archived == len(chats)
    return list(index(config).find({}).sort("room", 1))


def _verify_cli(config, tmp_path, *argv: str, **redaction) -> int:
    """`archiver verify` with CONFIG's stores and the [redaction] settings given (else the defaults)."""
    values = {k: config[k] for k in CLI_KEYS}
    values.update({f"redaction.{k}": v for k, v in redaction.items()})
    return main(["--config", str(write_toml(tmp_path / "cli.toml", values)), "verify", *argv])


@pytest.fixture
def unredacted(make_config):
    """Three chats archived with redaction off: one says a card number, one an e-mail address, one neither."""
    config = make_config(redaction__enabled=False)
    chats = _chats(3, {0: f"my card is {CARD} thanks", 1: "write to jane.doe@example.org please"})
    rooms = [chat["_id"] for chat, _ in chats]
    return config, _archive(config, chats), rooms


def test_versions_holding_what_the_rules_mask_are_named_by_rule_never_by_value(unredacted, keys, tmp_path,
                                                                                capsys) -> None:
    config, _, (card_room, mail_room, clean_room) = unredacted
    legal = str(keys["legal.key.pem"])
    assert _verify_cli(config, tmp_path, "--all", "--key", legal) == 0  # intact: the check is asked for
    capsys.readouterr()
    assert _verify_cli(config, tmp_path, "--all", "--key", legal, "--redaction", "--workers", "1") == 3
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1 and problems[0].startswith(f"PROBLEM {card_room} v1: ")
    assert "card 1" in problems[0] and "redaction" in problems[0]
    assert "4111" not in out and "1111" not in out, "the finding never repeats what it found"
    # With the e-mail rule too, the second chat is named; the third never is.
    assert _verify_cli(config, tmp_path, "--all", "--key", legal, "--redaction", "--json",
                       rules=["card", "email"]) == 3
    report = json.loads(capsys.readouterr().out)
    named = {p["room"]: p["problem"] for p in report["problems"]}
    assert set(named) == {card_room, mail_room} and "email 1" in named[mail_room]
    assert clean_room not in out and "jane.doe" not in json.dumps(report)
    entry = audit(config)[-1]
    assert entry["filters"]["redaction"] is True and entry["outcome"] == "problems"


def test_worker_processes_name_the_same_versions(unredacted, keys) -> None:
    config, _, (card_room, _, _) = unredacted
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"])
    rules = config.with_overrides(redaction__enabled=True)
    alone = verify_archive(rules, None, key, workers=1, redaction=True)
    spread = verify_archive(rules, None, key, workers=2, redaction=True)
    assert [(p.room, p.problem) for p in spread.problems] == [(p.room, p.problem) for p in alone.problems]
    assert [p.room for p in alone.problems] == [card_room]


@pytest.mark.parametrize("card_show", ["first6last4", "last4", "none"])
def test_versions_archived_under_todays_rules_are_not_named(make_config, keys, tmp_path, capsys,
                                                             card_show) -> None:
    """No false alarms: what the rules wrote (masked digits, masks) is not found again, in any display."""
    rules = {"rules": ["card", "iban", "email"], "card_show": card_show}
    config = make_config(**{f"redaction__{k}": v for k, v in rules.items()})
    _archive(config, _chats(3, {0: f"card {CARD}, and 5500-0000-0000-0004", 1: "IBAN GB82 WEST 1234 5698 7654 32",
                                2: "mail jane.doe@example.org or +4111111111111111"}))
    assert _verify_cli(config, tmp_path, "--all", "--key", str(keys["legal.key.pem"]), "--redaction", **rules) == 0
    assert "OK: " in capsys.readouterr().out


def test_the_reviewed_card_archived_under_todays_rules_verifies_clean(make_config, keys, tmp_path, capsys) -> None:
    """The card rule once left 4111 1111 1111 1111 in clear here and masked it on a second pass: every version
    archived under today's very rules was named, for ever (a new pass makes the same digest: no new version)."""
    config = make_config()  # the defaults: card, first6last4
    (entry,) = _archive(config, _chats(1, {0: "refund to 1234 5698 7654 324111 1111 1111 1111 please"}))
    assert _verify_cli(config, tmp_path, entry["room"], "--key", str(keys["legal.key.pem"]), "--redaction") == 0
    assert "PROBLEM" not in capsys.readouterr().out


def test_a_version_made_under_todays_settings_is_not_promised_a_new_one(make_config) -> None:
    """A configured pattern may change what the rules wrote (here it takes digits before a card's group, which
    the card rule then reads as a card's start). `run --full` would archive the same digest: no new version."""
    from archiver.integrity import redaction_check
    from archiver.redaction import Redactor
    from archiver.render.record import source_json

    redactor = Redactor.from_config(make_config(redaction__patterns={"phone": r"\+?[0-9][0-9 ]{7,14}[0-9]"}))
    text = "94722503994549595500-0000-0000-0004"  # the pattern takes 16 digits: "5500" then starts a group
    chat = {"_id": "c1", "room": "r1", "messages": [{"data": {"content": {"text": text}}}]}
    redacted = redactor.apply(chat, None)
    record = (b'{"source":' + source_json(redacted.chat, None) + b',"redaction":'
              + json.dumps({"enabled": True, "version": redactor.version}).encode() + b"}")
    check = redaction_check(record, redactor)
    assert not check.ok and "card 1" in check.detail and redactor.version in check.detail
    assert "archives a masked new version" not in check.detail and "makes no new version" in check.detail
    older = record.replace(redactor.version.encode(), b"0123456789ab")
    assert "`archiver run --full` archives a masked new version" in redaction_check(older, redactor).detail


def test_a_new_version_made_under_todays_rules_is_clean_and_the_old_one_stays_named(unredacted, keys,
                                                                                   tmp_path, capsys) -> None:
    config, _, (card_room, _, _) = unredacted
    Archiver(config.with_overrides(redaction__enabled=True)).run_pass(full=True)  # the nightly rescan, rules on
    versions = {e["version"] for e in index(config).find({"room": card_room, "status": "archived"})}
    assert versions == {1, 2}
    assert _verify_cli(config, tmp_path, card_room, "--key", str(keys["legal.key.pem"]), "--redaction") == 3
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1 and problems[0].startswith(f"PROBLEM {card_room} v1: ")


def test_redaction_needs_a_key_and_rules(unredacted, keys, tmp_path, capsys) -> None:
    config, _, _ = unredacted
    assert _verify_cli(config, tmp_path, "--all", "--redaction") == 2
    assert "--redaction needs --key" in capsys.readouterr().err
    assert _verify_cli(config, tmp_path, "--all", "--key", str(keys["legal.key.pem"]), "--redaction",
                       enabled=False) == 2
    assert "redaction.enabled" in capsys.readouterr().err


def test_versions_holding_a_verification_code_are_named_after_the_upgrade(make_config, keys, tmp_path,
                                                                         capsys) -> None:
    """Versions archived before the "cvv" rule (rules = ["card"], the old default) keep "cvv 123" in clear:
    `verify --redaction` under today's defaults names them; a version archived under them is clean."""
    before = make_config(redaction__rules=["card"])
    chats = _chats(3, {0: f"my card is {CARD} exp 12/27 cvv 739", 1: "the security code is 4821", 2: "order 7391"})
    _archive(before, chats)
    old_card, old_code, clean = (chat["_id"] for chat, _ in chats)
    legal = str(keys["legal.key.pem"])
    assert _verify_cli(before, tmp_path, "--all", "--key", legal, "--redaction", rules=["card"]) == 0
    capsys.readouterr()
    assert _verify_cli(before, tmp_path, "--all", "--key", legal, "--redaction", "--workers", "1") == 3  # defaults
    out = capsys.readouterr().out
    problems = sorted(line for line in out.splitlines() if line.startswith("PROBLEM"))
    assert [p.split()[1] for p in problems] == sorted([old_card, old_code])
    assert all("they would mask cvv 1;" in p for p in problems), problems  # by rule and count, the card masked
    assert "739" not in out and "4821" not in out and clean not in out
    Archiver(make_config()).run_pass(full=True)  # the nightly rescan under today's defaults: masked new versions
    assert _verify_cli(before, tmp_path, old_code, "--key", legal, "--redaction") == 3  # v1 stays, named
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1 and problems[0].startswith(f"PROBLEM {old_code} v1: ")


def test_versions_holding_a_pin_are_named_after_the_upgrade(make_config, keys, tmp_path, capsys) -> None:
    """Versions archived under the previous default (rules = ["card", "cvv"]) keep "my pin is 4821" in clear:
    `verify --redaction` under today's defaults names them by rule and count; ordinary text about pins is clean."""
    before = make_config(redaction__rules=["card", "cvv"])
    chats = _chats(4, {0: "my pin is 4821", 1: "4821 is my PIN", 2: "cvv 7 3 9", 3: "pin the message, order 7391"})
    _archive(before, chats)
    rooms = [chat["_id"] for chat, _ in chats]
    legal = str(keys["legal.key.pem"])
    assert _verify_cli(before, tmp_path, "--all", "--key", legal, "--redaction", "--workers", "1") == 3
    out = capsys.readouterr().out
    problems = {line.split()[1]: line for line in out.splitlines() if line.startswith("PROBLEM")}
    assert sorted(problems) == sorted(rooms[:2])  # the code was masked under the "cvv" rule already
    assert all("they would mask pin 1;" in p for p in problems.values()), problems
    assert "4821" not in out
    Archiver(make_config()).run_pass(full=True)  # masked new versions under today's defaults
    for room in rooms[:2]:
        assert _verify_cli(before, tmp_path, room, "--key", legal, "--redaction") == 3  # v1 stays, named
        problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
        assert len(problems) == 1 and problems[0].startswith(f"PROBLEM {room} v1: "), problems
