"""Legal holds: nothing of a held room is deleted, in the source or the archive.

A hold is a search filter (archiver/search.py) with a case name and a reason: by room,
customer id, agent id, or any combination of the search filters. It is evaluated against
the archive index whenever it matters (at deletion time, and when a chat is archived), so
it also covers chats archived after it was placed. A room is held when each filter group of
an active hold (FILTER_GROUPS) is matched by some version of it (the same version or not);
every version of a held room is then protected.

Where a source chat is still there, holds are matched against it as it is now too
(SourceHolds): the index can be stale or lack the link (a failed attempt's entry, a chat
changed since it was archived, one never archived), and a chat either matches is held.
A room the source check finds held is recorded so on its index entries (RECORD: the hold's
id), and that record holds it until the hold is released, whatever becomes of its source
(the live system may purge it; the archive masks what redaction masks).

In S3 each object of a held room carries an S3 legal hold: set when the hold is placed,
by the archive pass for new versions of held rooms, and repaired by each retention run;
cleared on release only where no other active hold applies (by the index or the source).
The entry records it (`legal_hold: true`). A local directory has no Object Lock: the hold
is written in the object's metadata file and honoured by the archiver's own deletions only.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from typing import Any, Callable, Iterable, Iterator

import bson
from bson.errors import InvalidDocument
from pymongo import ASCENDING
from pymongo.collection import Collection

from archiver.claims import now
from archiver.logs import event
from archiver.redaction import Redactor
from archiver.search import SEARCH_KEY_STATE, SearchFilters, build_query, in_window, same_key, utc_bound, words
from archiver.source import ChatSource
from archiver.store import ObjectMissing, ObjectStore, StoreError
from archiver.transcript import (CONTACT_PEOPLE, InvalidChat, Transcript, contact_person, contact_present, found_as,
                                 has_ended, normalise, roles_by_sender, stated_sender)

ROOM_BATCH = 500
RECORD = "held_by_source"  # on a room's entries: the ids of the active holds its source chat was found held by
_DATES = ("ended_from", "ended_to")
# Index entries that have objects to hold: archived, or what is left of one whose deletion was cut short.
_UNSETTLED = [{"status": "archived"}, {"status": "deleted", "deletion.state": "deleting"}]


def filters_doc(filters: SearchFilters) -> dict[str, Any]:
    """FILTERS as stored in a hold (dates as ISO text)."""
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in filters.given().items()}


def filters_of(hold: dict[str, Any], quiet: bool = False) -> SearchFilters:
    """HOLD's filters; a date bound outside years 1-9999 in UTC (stored before `hold place` refused them) is
    left out, so the hold covers every date within its other filters rather than stop every run (logged
    unless QUIET: the source check reads it per chat)."""
    given = dict(hold["filters"])
    for name in _DATES:
        if name in given:
            given[name] = utc_bound(given[name])
            if given[name] is not None:  # as BSON stores it in the index's query: the source check alike
                given[name] = _as_bson(given[name])
            else:
                del given[name]
                if not quiet:
                    event("hold_date_out_of_range", logging.WARNING, case=hold.get("case"), hold=hold.get("_id"),
                          filter=name, value=hold["filters"][name])
    return SearchFilters(**given)


def describe(hold: dict[str, Any]) -> str:
    scope = ", ".join(f"{k}={v}" + (" (outside years 1-9999 in UTC: not applied, every date is covered)"
                                    if k in _DATES and utc_bound(v) is None else "")
                      for k, v in sorted(hold["filters"].items()))
    return f"case {hold['case']!r} ({scope})"


class SourceHolds:
    """Holds matched against source chats as they are now, whatever the index shows: a failed attempt's entry
    names nobody, a chat changes after it was archived (people added, re-opened and continued, moved to
    another service), one never archived has no entry. A hold covers a source chat when each filter it sets
    (FILTER_GROUPS) is matched by the chat as it is now, or (through INDEX_ROOMS, which Holds sets) by some
    index entry of its room, any version: a hold "agent A in service S" covers a chat archived in S before A
    wrote in it and moved since. On the chat: room; customer (an author of its messages, or the contact's
    userID: who opened it) and agent (an author, the contact's agentID: who handled it, or whom else it names:
    contact_present); dates, type,
    channel and service as the archive pass would index the chat now (redacted, normalised); words in its text
    redacted as the index has them or as it stands, unredacted (compared as `words` makes them, which the
    index's keyed hashes are of): the source still says in clear what redaction masks. A filter that cannot
    be decided holds: a chat that cannot be read (SourceProblem, messages that are not documents) is held by
    any hold but one by another room, one that cannot be normalised by any whose people match."""

    def __init__(self, source: ChatSource, redactor: Redactor, max_message_chars: int) -> None:
        self.source = source
        self.redactor = redactor
        self.max_message_chars = max_message_chars
        # (hold, filter group, rooms) -> those of ROOMS some index entry of which matches the hold's filters
        # of that group (Holds.rooms_matching); None: the source alone decides
        self.index_rooms: Callable[[dict[str, Any], str, list[str]], set[str]] | None = None
        # {hold id: rooms} found held by a match (not for want of reading the chat) -> recorded on their index
        # entries (Holds.record); None: nothing written (a dry run, or no index)
        self.record: Callable[[dict[Any, set[str]]], None] | None = None

    def cases(self, room: str, loaded: tuple[Any, Any] | None, holds: list[dict[str, Any]]) -> list[str]:
        """The cases of HOLDS that may cover ROOM's source chat (LOADED: chat, contact, as read) as it is now."""
        return self.cases_many({room: loaded}, holds).get(room, [])

    def cases_many(self, loaded: dict[str, tuple[Any, Any] | None], holds: list[dict[str, Any]]
                   ) -> dict[str, list[str]]:
        """Of the rooms of LOADED (room: its source chat and contact, as read), those HOLDS may cover, with the
        cases. People are decided first, a chat is normalised only for a hold whose room and people match it
        (on the chat or the index), and once. The filters a chat does not match are looked up in the index,
        one query per hold and filter group for all the rooms, and only for holds of two groups or more (for
        one, that is Holds.held_rooms, which every caller asks too). The rooms a hold matches are recorded
        (RECORD); not those held only because their chat cannot be read or normalised: failing closed is no
        match, and would hold them for good."""
        chats = {room: pair for room, pair in loaded.items() if pair and pair[0] is not None}
        people = {room: _source_people(*pair) for room, pair in chats.items()}
        indexed = {room: functools.cache(functools.partial(self._indexed, *pair)) for room, pair in chats.items()}
        found: dict[str, set[str]] = {}
        matched: dict[Any, set[str]] = {}  # hold id -> rooms it matches (decided, not failing closed)
        for hold in holds:
            f = filters_of(hold, quiet=True)
            groups = _groups(f)
            split = self.index_rooms is not None and len(groups) > 1  # a filter may be matched by the index
            rooms = [room for room in chats if f.room is None or f.room == room]
            missing = {room: _people_missing(f, people[room]) for room in rooms}
            by_index = self._by_index(hold, {r: m for r, m in missing.items() if m}) if split else set()
            rest = [group for group in groups if group not in _PEOPLE]
            unmatched: dict[str, set[str]] = {}
            decided: set[str] = set()
            for room in (r for r in rooms if not missing[r] or r in by_index):
                now = indexed[room]() if rest and people[room] is not None else None
                left = set() if now is None else {group for group in rest if not now.matches(_only(f, group))}
                if not left:
                    found.setdefault(room, set()).add(hold["case"])
                    if people[room] is not None and (now is not None or not rest):
                        decided.add(room)
                elif split:
                    unmatched[room] = left
            for room in self._by_index(hold, unmatched):
                found.setdefault(room, set()).add(hold["case"])
                decided.add(room)
            if decided and hold.get("_id") is not None:
                matched[hold["_id"]] = decided
        if matched and self.record is not None:
            self.record(matched)
        return {room: sorted(cases) for room, cases in found.items()}

    def _by_index(self, hold: dict[str, Any], wanted: dict[str, set[str]]) -> set[str]:
        """The rooms of WANTED (room: filter groups of HOLD) each group of which some index entry of the room
        matches (one query per group)."""
        if not wanted or self.index_rooms is None:
            return set()
        matched = {group: self.index_rooms(hold, group, sorted(r for r, m in wanted.items() if group in m))
                   for group in set().union(*wanted.values())}
        return {room for room, groups in wanted.items() if all(room in matched[group] for group in groups)}

    def held(self, rooms: list[str], holds: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Of ROOMS, those whose source chat (read now, one query per collection) HOLDS may cover, with the cases."""
        if not rooms or not holds:
            return {}
        return self.cases_many(self.source.load_many(rooms), holds)

    def _indexed(self, chat: dict[str, Any], contact: dict[str, Any] | None) -> "_Indexed | None":
        """CHAT as the archive pass would index it now; None if it could not archive it (a rule that cannot
        be applied, a message too long, invalid text). Its words unredacted too, at first use."""
        try:
            redacted = self.redactor.apply(chat, contact)
            status = "ended" if has_ended(redacted.chat) else "interim"
            return _Indexed(normalise(redacted.chat, redacted.contact, status=status,
                                      max_message_chars=self.max_message_chars),
                            functools.partial(self._clear_words, chat, contact, status))
        except InvalidChat:
            return None

    def _clear_words(self, chat: dict[str, Any], contact: dict[str, Any] | None, status: str) -> set[str]:
        """The words of CHAT's messages unredacted: normalised as the archive pass would (unredacted), or
        where that fails, of every message text as stored."""
        try:
            transcript = normalise(chat, contact, status=status, max_message_chars=self.max_message_chars)
            return _words_of(m.text for m in transcript.messages)
        except InvalidChat:
            return _words_of(_raw_texts(chat))


class _Indexed:
    """What holds by dates, type, channel, service and words read of a source chat: the index entry's values
    (artifacts.index_entry) for it now; its words (redacted as indexed, and CLEAR_WORDS(): unredacted) made at
    first use."""

    def __init__(self, transcript: Transcript, clear_words: Callable[[], set[str]] = set) -> None:
        self.transcript = transcript
        self.clear_words = clear_words
        at = transcript.ended_at or transcript.last_message_at
        self.ended_at = None if at is None else _as_bson(at)
        self.started_at = None if transcript.started_at is None else _as_bson(transcript.started_at)

    @functools.cached_property
    def words(self) -> set[str]:
        return _words_of(m.text for m in self.transcript.messages)

    @functools.cached_property
    def all_words(self) -> set[str]:
        return self.words | self.clear_words()

    def matches(self, f: SearchFilters) -> bool:
        t = self.transcript
        if any(want is not None and want != have for want, have in
               ((f.ctlive_type, t.ctlive_type), (f.channel, t.channel), (f.service, t.service))):
            return False
        if (f.ended_from is not None or f.ended_to is not None) and not in_window(f, self.started_at, self.ended_at):
            return False
        # words masked in the archive (a number read as a PIN) are still in the source in clear: either holds
        return f.text is None or words(f.text) <= self.words or words(f.text) <= self.all_words


def _words_of(texts: Iterable[Any]) -> set[str]:
    found: set[str] = set()
    for text in texts:
        if text:
            found |= words(text)
    return found


def _raw_texts(chat: dict[str, Any]) -> Iterator[str]:
    """Every message's text as stored (`data.content.text`, or `data.content` itself, where it is text: as the
    transcript reads it)."""
    for message in chat.get("messages") or []:
        data = message.get("data") if isinstance(message, dict) else None
        content = data.get("content") if isinstance(data, dict) else None
        text = content.get("text") if isinstance(content, dict) else content
        if isinstance(text, str):
            yield text


def _as_bson(at: dt.datetime) -> dt.datetime:
    """AT truncated to milliseconds, as BSON stores a date (the index's, and a hold's bounds in its query)."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


# A hold's filters as the source check decides them, each group on the source or on some index entry
FILTER_GROUPS = {"customer": ("customer",), "agent": ("agent",), "dates": (*_DATES, "overlapping"),
                 "ctlive_type": ("ctlive_type",), "channel": ("channel",), "service": ("service",), "text": ("text",)}
_PEOPLE = ("customer", "agent")


def _groups(f: SearchFilters) -> list[str]:
    """The filter groups F sets (its room aside: decided on the room alone)."""
    given = f.given().keys()
    return [group for group, names in FILTER_GROUPS.items() if given & set(names)]


def _people_missing(f: SearchFilters, people: dict[str, set[str]] | None) -> set[str]:
    """The people filters of F a source chat naming PEOPLE does not match (none if it cannot be read: PEOPLE
    None, it cannot be ruled out)."""
    if people is None:
        return set()
    return {role for role in _PEOPLE if getattr(f, role) is not None and getattr(f, role) not in people[role]}


def _only(f: SearchFilters, group: str) -> SearchFilters:
    """F's filters of GROUP alone."""
    return SearchFilters(**{k: v for k, v in f.given().items() if k in FILTER_GROUPS[group]})


def _source_people(chat: Any, contact: Any) -> dict[str, set[str]] | None:
    """Who a source chat names, by role: its messages' authors under the roles the index finds them by
    (transcript.roles_by_sender and found_as: the roles any of their messages states, both where none does)
    and the contact's people (its userID as a customer, its agentID and whom else it names, contact_present, as
    agents); None if it cannot be read (a
    SourceProblem, messages that are not an array of documents)."""
    messages = chat.get("messages") if isinstance(chat, dict) else None
    messages = [] if isinstance(chat, dict) and messages is None else messages
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    people: dict[str, set[str]] = {"customer": set(), "agent": set()}
    said = []
    for message in messages:
        sender, is_agent = stated_sender(message.get("data"))
        said.append((_user_id(sender), is_agent))
    authors = roles_by_sender(said)
    for sender, roles in authors.items():
        for role in found_as(roles):
            people[role].add(sender)
    for field, (_, role) in CONTACT_PEOPLE.items():
        if isinstance(contact, dict) and contact_person(contact, field):
            people[role].add(contact_person(contact, field))
    if isinstance(contact, dict):  # whom else it names (an agent it was transferred to): `present`, as an agent
        people["agent"].update(contact_present(contact, authors))
    return people


def _user_id(value: Any) -> str:
    """A user id as the index writes it (as text, whatever its type), "" if none."""
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


class Holds:
    def __init__(self, holds: Collection, entries: Collection, key: bytes | None,
                 state: Collection | None = None, sources: SourceHolds | None = None) -> None:
        self.holds = holds
        self.entries = entries
        self.key = key  # the search key, for holds by --text
        self.state = state  # the index state, which names the key the word hashes were made with
        self.sources = sources  # to match source chats too (retention, erasure, hold place/release)
        if sources is not None:  # a filter a source chat does not match may be matched by an index entry
            sources.index_rooms = self.rooms_matching
            sources.record = self.record

    def ensure_indexes(self) -> None:
        self.holds.create_index([("case", ASCENDING)], name="case")
        self.holds.create_index([("active", ASCENDING)], name="active")
        self.entries.create_index([(RECORD, ASCENDING)], name=RECORD)  # (rooms_of, release)

    def active(self) -> list[dict[str, Any]]:
        """The active holds; a case stored as other than text (by hand) as its repr: the hold still holds."""
        return [hold if isinstance(hold.get("case"), str) else {**hold, "case": f"(not text: {hold.get('case')!r:.200})"}
                for hold in self.holds.find({"active": True}).sort("placed_at", ASCENDING)]

    def listing(self, everything: bool = False) -> list[dict[str, Any]]:
        return list(self.holds.find({} if everything else {"active": True}).sort("placed_at", ASCENDING))

    def place(self, filters: SearchFilters, case: str, reason: str, actor: dict[str, str],
              before_insert: Callable[[dict[str, Any]], None] = lambda hold: None) -> dict[str, Any]:
        """Store a hold, checked first; BEFORE_INSERT(hold) comes between (the audit entry: no hold unrecorded)."""
        if not filters.given():
            raise ValueError("a hold needs a scope: --room, --customer, --agent or search filters")
        hold = {"_id": uuid.uuid4().hex, "case": case, "reason": reason, "filters": filters_doc(filters),
                "active": True, "placed_at": now(), "placed_by": actor}
        late = [f"{name} {hold['filters'][name]}" for name in _DATES if name in hold["filters"]
                and utc_bound(hold["filters"][name]) is None]
        if late:  # (filters_of would leave it out)
            raise ValueError(f"{', '.join(late)}: outside years 1-9999 in UTC; nothing stored")
        try:  # refused now, not at deletion: a filter that cannot be evaluated, another search key, or stored
            bson.encode(self.query(hold))
        except (OverflowError, InvalidDocument) as exc:
            raise ValueError(f"a hold by {filters.given()} cannot be stored in MongoDB ({exc}); nothing stored") from None
        if filters.text is not None and not words(filters.text):
            raise ValueError(f"--text {filters.text!r}: no word to hold by (only punctuation)")
        before_insert(hold)
        self.holds.insert_one(hold)
        return hold

    def release(self, case: str, reason: str, actor: dict[str, str]) -> list[dict[str, Any]]:
        """Release every active hold of CASE; the holds released (kept, marked inactive)."""
        released = list(self.holds.find({"case": {"$eq": case}, "active": True}))
        for hold in released:
            self.holds.update_one({"_id": hold["_id"], "active": True}, {"$set": {
                "active": False, "released_at": now(), "released_by": actor, "release_reason": reason}})
        ids = [hold["_id"] for hold in released]
        if ids:  # (a record of a released hold holds nothing: one a crash left is only untidy)
            self.entries.update_many({RECORD: {"$in": ids}}, {"$pull": {RECORD: {"$in": ids}}})
        return released

    def record(self, matched: dict[Any, set[str]]) -> None:
        """Record on every index entry of each room of MATCHED (hold id: rooms) that the hold covers it through
        its source chat: held_rooms then holds it until the hold is released, the source gone or not."""
        for hold_id, rooms in matched.items():
            where = {"room": {"$in": sorted(rooms)}}  # (set, then added: nx-27017 adds to no missing array)
            self.entries.update_many({**where, RECORD: {"$exists": False}}, {"$set": {RECORD: [hold_id]}})
            self.entries.update_many({**where, RECORD: {"$ne": hold_id}}, {"$addToSet": {RECORD: hold_id}})

    def query(self, hold: dict[str, Any]) -> dict[str, Any]:
        """The index entries HOLD covers. A hold by words fails closed: entries archived before word hashes
        were written cannot be told apart, so they are covered; under another key than the index's, words
        would match nothing, so that is a ConfigError (the run stops) rather than a hold that holds nothing."""
        query = build_query(filters_of(hold), self.key, unknown_contact=True)
        if "$or" not in query:  # no words
            return query
        if self.state is not None:
            same_key(self.state.find_one({"_id": SEARCH_KEY_STATE}), self.key)
        # Archives without word hashes (made before the key, or by an archiver without it), and what is left of
        # one whose deletion was cut short; not an attempt that never completed, an upload under way or a
        # finished tombstone: they have no words of their own and would hold their room under every such hold.
        unhashed = {"terms": {"$exists": False}, "$or": [
            {"status": "archived"}, {"status": "deleted", "deletion.state": "deleting"}]}
        return {**query, "$or": [*query["$or"], unhashed]}

    def held_rooms(self, rooms: list[str], holds: list[dict[str, Any]] | None = None) -> dict[str, list[str]]:
        """Of ROOMS, those HOLDS (default: the active ones) cover by the index, with the cases holding them: each
        filter group of a hold matched by some entry of the room, any version (the same or not), or the hold
        recorded on one (RECORD: found held through the source chat, which may be gone since)."""
        found: dict[str, set[str]] = {}
        if not rooms:
            return {}
        holds = self.active() if holds is None else holds
        for hold in holds:
            for room in self._matching(hold, rooms):
                found.setdefault(room, set()).add(hold["case"])
        cases = {hold["_id"]: hold["case"] for hold in holds if hold.get("_id") is not None}
        if cases:
            for doc in self.entries.find({"room": {"$in": rooms}, RECORD: {"$in": list(cases)}}, {"room": 1, RECORD: 1}):
                found.setdefault(doc["room"], set()).update(cases[i] for i in doc[RECORD] if i in cases)
        return {room: sorted(cases) for room, cases in found.items()}

    def _matching(self, hold: dict[str, Any], rooms: list[str]) -> set[str]:
        """Of ROOMS, those some entry of which matches each filter group of HOLD: one query for a hold of one
        group (or a room alone), else one per group (intersected)."""
        if hold["filters"].get("room") is not None:
            rooms = [room for room in rooms if room == hold["filters"]["room"]]
        groups = _groups(filters_of(hold, quiet=True))
        if not rooms:
            return set()
        if len(groups) <= 1:
            match = {"$and": [{"room": {"$in": rooms}}, self.query(hold)]}
            return {doc["room"] for doc in self.entries.find(match, {"room": 1})}
        matched = set(rooms)
        for group in groups:
            matched &= self.rooms_matching(hold, group, sorted(matched)) if matched else set()
        return matched

    def rooms_matching(self, hold: dict[str, Any], group: str, rooms: list[str]) -> set[str]:
        """Of ROOMS, those some index entry of which (any version) matches HOLD's filters of GROUP
        (FILTER_GROUPS) alone; one query."""
        if not rooms:
            return set()
        query = self.query({**hold, "filters": {k: v for k, v in hold["filters"].items()
                                                if k in FILTER_GROUPS[group]}})
        return {doc["room"] for doc in self.entries.find({"$and": [{"room": {"$in": rooms}}, query]}, {"room": 1})}

    def rooms_of(self, hold: dict[str, Any]) -> Iterator[list[str]]:
        """The rooms HOLD covers by the index (held_rooms), in batches (streamed: a hold may cover millions of
        chats): those of the entries its first filter group (and room) matches, each batch checked for the
        other groups, and those it is recorded on."""
        groups = _groups(filters_of(hold, quiet=True))
        first = hold if len(groups) <= 1 else {**hold, "filters": {
            k: v for k, v in hold["filters"].items() if k == "room" or k in FILTER_GROUPS[groups[0]]}}
        query = self.query(first)
        if hold.get("_id") is not None:
            query = {"$or": [query, {RECORD: hold["_id"]}]}
        for batch in self._rooms(query):
            held = batch if len(groups) <= 1 else sorted(self.held_rooms(batch, [hold]))
            if held:
                yield held

    def _rooms(self, query: dict[str, Any]) -> Iterator[list[str]]:
        """The rooms of the entries QUERY matches, in order, in batches."""
        batch: list[str] = []
        seen_last = None
        for doc in self.entries.find(query, {"room": 1}).sort("room", ASCENDING):
            if doc["room"] != seen_last:
                batch.append(doc["room"])
                seen_last = doc["room"]
            if len(batch) >= ROOM_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- S3 legal holds on the objects ---------------------------------------------------------

    def protect(self, rooms: list[str], store_of: Callable[[dict[str, Any]], ObjectStore],
                failures: list[str] | None = None) -> int:
        """Set the S3 legal hold on every object of ROOMS' entries that lacks it, and on what is left of an
        archive whose deletion was cut short (its tombstone still `deleting`); the entries changed. One the
        store refuses is added to FAILURES ("room vN: error"; the next retention run's sync retries it)."""
        changed = 0
        for entry in self.entries.find({"room": {"$in": rooms}, "$or": _UNSETTLED, "legal_hold": {"$ne": True}}):
            try:
                _set_all(entry, store_of(entry), True)
            except StoreError as exc:  # repaired by the next retention run; deletions check holds anyway
                event("legal_hold_failed", logging.WARNING, room=entry["room"], error=str(exc))
                if failures is not None:
                    failures.append(f"{entry['room']} v{entry.get('version')}: {exc}")
                continue
            self.entries.update_one({"_id": entry["_id"]}, {"$set": {"legal_hold": True}})
            changed += 1
        return changed

    def protect_through_sources(self, store_of: Callable[[dict[str, Any]], ObjectStore],
                                holds: list[dict[str, Any]] | None = None, failures: list[str] | None = None,
                                keep: Callable[[], None] = lambda: None) -> tuple[int, list[str]]:
        """Set the S3 legal hold on the rooms HOLDS (default: the active ones) cover through their source
        chats alone, and record them so (SourceHolds.record): of the rooms with objects whose source chat is
        still there and that the index does not show held by every case of HOLDS, those the source matches.
        Each such source chat is read once (only the rooms the holds name, where each names one). KEEP()
        before each batch (a run's lease: this reads every such source chat). The entries changed, and the
        rooms found so held."""
        holds = self.active() if holds is None else holds
        if self.sources is None or not holds:
            return 0, []
        with_objects: dict[str, Any] = {"$or": _UNSETTLED}
        named = {hold["filters"].get("room") for hold in holds}
        if None not in named:
            with_objects["room"] = {"$in": sorted(named)}
        cases = {hold["case"] for hold in holds}
        changed, found = 0, []
        for batch in self._rooms(with_objects):
            keep()
            by_index = self.held_rooms(batch, holds)
            # a room held by one case may be held through its source by another, which must be recorded too
            unsure = [room for room in batch if not cases <= set(by_index.get(room, ()))]
            held = self.sources.held(sorted(self.sources.source.present(unsure)), holds)
            if held:
                changed += self.protect(sorted(held), store_of, failures)
                found += sorted(held)
        return changed, found

    def unprotect(self, rooms: list[str], store_of: Callable[[dict[str, Any]], ObjectStore],
                  failures: list[str] | None = None) -> int:
        """Clear the S3 legal hold on ROOMS' objects where no active hold still applies, by the index or (with
        SOURCES) the source chat; the entries changed. One the store refuses keeps `legal_hold: true` (the
        next retention run's sync retries it) and is added to FAILURES ("room vN: error")."""
        holds = self.active()
        still = self.held_rooms(rooms, holds)
        free = [room for room in rooms if room not in still]
        if self.sources is not None and free and holds:
            through = self.sources.held(sorted(self.sources.source.present(free)), holds)
            free = [room for room in free if room not in through]
        changed = 0
        for entry in self.entries.find({"room": {"$in": free}, "legal_hold": True}):
            try:
                _set_all(entry, store_of(entry), False)
            except StoreError as exc:
                event("legal_hold_release_failed", logging.WARNING, room=entry["room"], error=str(exc))
                if failures is not None:
                    failures.append(f"{entry['room']} v{entry.get('version')}: {exc}")
                continue
            self.entries.update_one({"_id": entry["_id"]}, {"$unset": {"legal_hold": ""}})
            changed += 1
        return changed

    def protect_new(self, rooms: Iterable[str], holds: list[dict[str, Any]],
                    store_of: Callable[[dict[str, Any]], ObjectStore]) -> int:
        """The archive pass's seam: new versions of held rooms get the S3 legal hold at once (HOLDS: the
        active ones, which the pass has just read)."""
        rooms = list(rooms)
        if not rooms or not holds:  # nothing new (an index write with no chat ended), or nothing held: no query
            return 0
        try:
            return self.protect(list(self.held_rooms(rooms, holds)), store_of)
        except Exception as exc:  # never fails the pass: deletions check holds themselves, the next run repairs
            event("legal_hold_failed", logging.WARNING, rooms=len(rooms), error=f"{type(exc).__name__}: {exc}")
            return 0

    def sync(self, store_of: Callable[[dict[str, Any]], ObjectStore], through_sources: bool = True,
             keep: Callable[[], None] = lambda: None) -> int:
        """Set the legal hold wherever an active hold applies (by the index, or THROUGH_SOURCES by the source
        chat) and it is missing (a crash, a failed put, a chat that changed), and clear it where none applies
        any more (a release the store refused in part, a chat held only while it could not be read: a match is
        recorded, RECORD, and holds until the release); the entries changed.
        KEEP() before each batch of rooms: a run's lease, which this may outlast on a large archive."""
        holds = self.active()
        changed = 0
        for hold in holds:
            for batch in self.rooms_of(hold):
                keep()
                changed += self.protect(batch, store_of)
        through: list[str] = []
        if through_sources:
            added, through = self.protect_through_sources(store_of, holds, keep=keep)
            changed += added
        return changed + self.unprotect_unheld(store_of, held=set(through), keep=keep)

    def unprotect_unheld(self, store_of: Callable[[dict[str, Any]], ObjectStore], failures: list[str] | None = None,
                         held: frozenset[str] | set[str] = frozenset(),
                         keep: Callable[[], None] = lambda: None) -> int:
        """Clear the legal hold on every room that has it and no active hold covers (`unprotect`), but HELD
        (found held just now: their source chats are not read again); KEEP() before each batch."""
        changed = 0
        for batch in self._rooms({"legal_hold": True}):
            keep()
            batch = [room for room in batch if room not in held]
            changed += self.unprotect(batch, store_of, failures) if batch else 0
        return changed


def _set_all(entry: dict[str, Any], store: ObjectStore, on: bool) -> None:
    for obj in (entry.get("objects") or {}).values():
        try:
            store.set_legal_hold(obj["key"], obj.get("version_id", ""), on)
        except StoreError:
            if entry["status"] != "deleted" or not _gone(store, obj):
                raise  # (an object a deletion cut short had removed already: nothing left to hold)


def _gone(store: ObjectStore, obj: dict[str, Any]) -> bool:
    try:
        store.get(obj["key"], obj.get("version_id", ""))
    except ObjectMissing:
        return True
    return False


def open_holds(config: Any, sources: SourceHolds | None = None) -> Holds:
    from archiver.index import index_database
    from archiver.search import load_search_key

    config.require("mongodb.uri")
    db = index_database(config)
    key = load_search_key(config["search.key_file"]) if config["search.key_file"] else None
    holds = Holds(db[config["index.holds"]], db[config["index.entries"]], key, db[config["index.state"]], sources)
    holds.ensure_indexes()
    return holds
