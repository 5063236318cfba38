"""Retention policy: which rule a chat falls under, and how long its source and archive are kept.

Rules are named tables in the configuration (`[retention.rules.NAME]`), matched on
`ctlive_type`, `channel` and `service` (a text or a list of texts; a key left out
matches anything). A rule with no match keys is the default. Periods in days:
`source_days` (source chat kept after it is archived and verified), `archive_days`
(archive kept after it was archived), `lock_days` (Object Lock retain-until after
archiving; default `storage.retain_days`). A period left out keeps that copy for ever.

Validation happens when the configuration is loaded, so a contradictory policy stops
every command before anything is done (exit 2), with the rule and key named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MATCH_KEYS = ("ctlive_type", "channel", "service")
PERIOD_KEYS = ("source_days", "archive_days", "lock_days")
MAX_DAYS = 100 * 366  # beyond a century a period is a typo, not a policy


class PolicyError(ValueError):
    """The retention rules contradict themselves or the storage settings; the message names the rule and key."""


@dataclass(frozen=True)
class Rule:
    name: str
    match: tuple[tuple[str, frozenset[str]], ...]  # (key, allowed values); keys left out match anything
    source_days: int | None
    archive_days: int | None
    lock_days: int | None  # None: Object Lock is off
    precedence: int = 0

    def matches(self, fields: Mapping[str, Any]) -> bool:
        return all(fields.get(key) in allowed for key, allowed in self.match)

    @property
    def periods(self) -> tuple[int | None, int | None, int | None]:
        return self.source_days, self.archive_days, self.lock_days

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "match": {k: sorted(v) for k, v in self.match}, "source_days": self.source_days,
                "archive_days": self.archive_days, "lock_days": self.lock_days, "precedence": self.precedence}


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]  # highest precedence first, then by name: the first that matches applies

    def rule_for(self, fields: Mapping[str, Any]) -> Rule | None:
        """The rule for a chat with these index FIELDS (ctlive_type, channel, service); None: none applies."""
        return next((rule for rule in self.rules if rule.matches(fields)), None)

    def describe(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self.rules]


def parse_policy(rules: Mapping[str, Any], retain_days: int, lock_mode: str) -> Policy:
    """The policy in RULES (the `retention.rules` table); PolicyError naming the rule and key."""
    parsed = [_rule(str(name), table, retain_days, lock_mode) for name, table in rules.items()]
    defaults = [r.name for r in parsed if not r.match]
    if len(defaults) > 1:
        raise PolicyError(f"retention.rules: {', '.join(map(repr, defaults))} are all defaults (no match keys): "
                          "keep one")
    for i, a in enumerate(parsed):
        for b in parsed[i + 1:]:
            _check_pair(a, b)
    return Policy(tuple(sorted(parsed, key=lambda r: (not r.match, -r.precedence, r.name))))


def _rule(name: str, table: Any, retain_days: int, lock_mode: str) -> Rule:
    where = f"retention.rules.{name}"
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where}: must be a table ([retention.rules.{name}])")
    unknown = set(table) - {*MATCH_KEYS, *PERIOD_KEYS, "precedence"}
    if unknown:
        raise PolicyError(f"{where}.{sorted(unknown)[0]}: unknown key (known: "
                          f"{', '.join((*MATCH_KEYS, *PERIOD_KEYS, 'precedence'))})")
    match = tuple((key, _values(f"{where}.{key}", table[key])) for key in MATCH_KEYS if key in table)
    periods = {key: _days(f"{where}.{key}", table.get(key)) for key in PERIOD_KEYS}
    source, archive, lock = periods["source_days"], periods["archive_days"], periods["lock_days"]
    if archive is not None and archive < 1:
        raise PolicyError(f"{where}.archive_days: must be at least 1 (leave it out to keep archives for ever)")
    if lock is not None and not lock_mode:
        raise PolicyError(f"{where}.lock_days: set, but storage.object_lock_mode is empty (no Object Lock)")
    if lock is not None and lock < 1:  # a retain-until of the archive's own time: past when it is stored
        raise PolicyError(f"{where}.lock_days: must be at least 1 day with storage.object_lock_mode set (got {lock}): "
                          "S3 refuses a retain-until in the past")
    if lock is None and lock_mode:
        lock = retain_days
    lock_from = "lock_days" if "lock_days" in table else f"storage.retain_days = {retain_days}"
    if archive is not None and lock is not None and archive < lock:
        raise PolicyError(f"{where}.archive_days: {archive} days is shorter than the Object Lock retain-until "
                          f"({lock} days, from {lock_from}): the archive could not be deleted when due; "
                          f"set lock_days to {archive} or less")
    if archive is not None and source is None:
        raise PolicyError(f"{where}.source_days: not set, but archive_days is: the source chat would outlive its "
                          "archive (and be archived again); set source_days to at most archive_days")
    if source is not None and archive is not None and source > archive:
        raise PolicyError(f"{where}.source_days: {source} days is longer than archive_days ({archive}): the archive "
                          "would be deleted while the source chat remains, and archived again")
    precedence = table.get("precedence", 0)
    if not isinstance(precedence, int) or isinstance(precedence, bool):
        raise PolicyError(f"{where}.precedence: must be an integer (got {precedence!r})")
    return Rule(name, match, source, archive, lock, precedence)


def _values(where: str, value: Any) -> frozenset[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise PolicyError(f"{where}: must be a text or a non-empty list of texts (got {value!r:.80})")
    return frozenset(items)


def _days(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise PolicyError(f"{where}: must be a whole number of days (got {value!r:.80})")
    if value < 0:
        raise PolicyError(f"{where}: must be 0 or more days (got {value})")
    if value > MAX_DAYS:
        raise PolicyError(f"{where}: {value} days is more than a century; leave the key out to keep for ever")
    return value


def _overlap(a: Rule, b: Rule) -> bool:
    """Whether some chat can match both A and B (a key only one of them names matches anything)."""
    mine, theirs = dict(a.match), dict(b.match)
    return all(mine[key] & theirs[key] for key in mine.keys() & theirs.keys())


def _check_pair(a: Rule, b: Rule) -> None:
    if not a.match or not b.match:  # the default applies only where no other rule does
        return
    if _overlap(a, b) and a.periods != b.periods and a.precedence == b.precedence:
        raise PolicyError(f"retention.rules.{a.name} and retention.rules.{b.name}: both can match the same chat "
                          f"({_common(a, b)}) with different periods; set `precedence` on the one that wins")


def _common(a: Rule, b: Rule) -> str:
    mine, theirs = dict(a.match), dict(b.match)
    parts = []
    for key in MATCH_KEYS:
        values = mine.get(key, theirs.get(key)) if key not in mine or key not in theirs else mine[key] & theirs[key]
        parts.append(f"{key} {sorted(values)[0]!r}" if values else f"any {key}")
    return ", ".join(parts)


def configured_policy(config: Any) -> Policy:
    """The policy in CONFIG (`retention.rules`); ConfigError naming the rule and key."""
    from archiver.config import ConfigError

    try:
        return parse_policy(config["retention.rules"], config["storage.retain_days"], config["storage.object_lock_mode"])
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
