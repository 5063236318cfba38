"""Reading the platform's chats: discovering ended ones and loading one room.

Discovery is driven by message timestamps, so a pass reads only chats whose end
(or last message, for abandoned ones) falls in a window since the previous pass,
through the indexes in `required_indexes`. The source is only ever read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import bson
import mongomock
from bson.errors import BSONError
from bson.int64 import Int64
import pymongo
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from archiver import lossless
from archiver.batches import batched
from archiver.mongo import STORED, TOLERANT, connect, tolerant
from archiver.transcript import END_TYPE, to_datetime


BATCH = 500  # rooms asked for in one query
DELETE_BATCH = 100  # documents deleted by one filter (each named whole in it)
ASK_SECONDS = 2  # for missing_collections' question
CHANGED = "it changed since it was checked (written to meanwhile): kept"


@dataclass(frozen=True)
class RequiredIndex:
    collection: str
    keys: list[tuple[str, int]]
    name: str
    why: str


def missing_collections(config: Any) -> list[str]:
    """A warning for each collection discovery reads (source.chats, and source.messages when set) that does not
    exist in source.database: a mistyped name makes every pass idle, which looks healthy; and for source.contacts
    missing while chats exist (each is archived without its contact). An empty collection is no warning (a new
    deployment). Asked for at most ASK_SECONDS (status is run when something is down); a source that does not
    answer is said to be so, one that refuses (no listCollections right) is no warning."""
    if not config["mongodb.uri"]:
        return []
    database = config["source.database"]
    try:
        with pymongo.timeout(ASK_SECONDS):
            db = connect(config["mongodb.uri"])[database]
            present = set(db.list_collection_names())
            # A new deployment has no contacts until its first chat: asked only once there are chats.
            chats = config["source.chats"] in present and db[config["source.chats"]].find_one({}, {"_id": 1})
    except PyMongoError as exc:
        if isinstance(exc, (ConnectionFailure, ExecutionTimeout)):
            return [f"source.database {database!r}: could not be asked which collections it has within "
                    f"{ASK_SECONDS} s ({type(exc).__name__}; mongodb.uri)"]
        return []
    missing = [(key, "nothing there is ever archived") for key in ("chats", "messages")]
    missing += [("contacts", "every chat is archived without its contact")] if chats else []
    return [f"source.{key}: no collection {config[f'source.{key}']!r} in source.database {database!r} "
            f"(a mistyped name? {consequence})"
            for key, consequence in missing if config[f"source.{key}"] and config[f"source.{key}"] not in present]


class ChatSource:
    def __init__(self, db: Database, chats: str, contacts: str, messages: str = "",
                 mask: Callable[[str], str] = str) -> None:
        """MASK (Redactor.mask) redacts a reason that quotes the source (a field's name)."""
        # Invalid UTF-8 from the platform must not break the read: it decodes to lone
        # surrogates, which normalisation reports with their place (and quarantines).
        self.db = tolerant(db)
        # The chats, messages and contacts archived are read as the bytes the server returned, and archived
        # only if decoding keeps them exactly (archiver/lossless.py); the stand-in holds values, not bytes.
        self._bytes = not isinstance(db, mongomock.database.Database)
        self.mask = mask
        self.chats = self.db[chats]
        self.contacts = self.db[contacts]
        self.messages = self.db[messages] if messages else None
        # Embedded messages live under "messages."; a separate collection holds them at the top.
        self._path = "" if self.messages is not None else "messages."

    def required_indexes(self) -> list[RequiredIndex]:
        p = self._path
        msg_collection = self.messages.name if self.messages is not None else self.chats.name
        return [
            RequiredIndex(msg_collection, [(f"{p}data.messageType", ASCENDING), (f"{p}data.ts", ASCENDING)],
                          "archiver_end_ts", "find chats that ended since the last pass"),
            RequiredIndex(msg_collection, [(f"{p}data.ts", ASCENDING)],
                          "archiver_ts", "find chats idle since the last pass (abandoned)"),
            RequiredIndex(self.chats.name, [("room", ASCENDING)], "archiver_room", "load a chat by room"),
            RequiredIndex(self.contacts.name, [("id", ASCENDING)], "archiver_contact", "join the contact"),
        ] + ([RequiredIndex(msg_collection, [("room", ASCENDING)], "archiver_msg_room", "load a room's messages")]
             if self.messages is not None else [])

    def has_index(self, ix: RequiredIndex) -> bool:
        """Whether IX's collection has an index on IX's keys, whatever its name (the platform's own, say)."""
        wanted = [tuple(k) for k in ix.keys]
        return any([tuple(k) for k in info["key"]] == wanted for info in self.db[ix.collection].index_information().values())

    def create_indexes(self) -> list[str]:
        """The missing ones created (MongoDB refuses a second index on the same keys under another name)."""
        done = []
        for ix in self.required_indexes():
            if not self.has_index(ix):
                self.db[ix.collection].create_index(ix.keys, name=ix.name)
                done.append(f"{ix.collection}.{ix.name}")
        return done

    def ended_since(self, since_ms: float | None) -> Iterator[str]:
        """Rooms with an endChat message at or after SINCE_MS (all ended rooms when None)."""
        match: dict[str, Any] = {"data.messageType": END_TYPE}
        if since_ms is not None:
            match["data.ts"] = {"$gte": since_ms}
        if self.messages is not None:
            for doc in self.messages.find(match, {"room": 1, "_id": 0}):
                if isinstance(doc.get("room"), str):
                    yield doc["room"]
            return
        for doc in self.chats.find({"messages": {"$elemMatch": match}}, {"room": 1, "_id": 1}):
            yield _room_of(doc)

    def end_times(self, rooms: list[str]) -> dict[str, float]:
        """When each of ROOMS ended (epoch ms), by its contact's endTime (a number of any kind, a date, text),
        in one query: a flat field, where the endChat's time would mean reading every message's (status ages
        a chat by it)."""
        found = self.contacts.find({"id": {"$in": rooms}}, {"id": 1, "endTime": 1, "_id": 0})
        ends = {d["id"]: to_datetime(d.get("endTime")) for d in found if isinstance(d.get("id"), str)}
        return {room: end.timestamp() * 1000 for room, end in ends.items() if end is not None}

    def ended_among(self, rooms: list[str]) -> set[str]:
        """Those of ROOMS that have an endChat message (one query)."""
        match = {"data.messageType": END_TYPE}
        if self.messages is not None:
            return {d["room"] for d in self.messages.find({"room": {"$in": rooms}, **match}, {"room": 1, "_id": 0})}
        return {_room_of(d) for d in self.chats.find({"room": {"$in": rooms}, "messages": {"$elemMatch": match}},
                                                     {"room": 1, "_id": 1})}

    def idle_between(self, since_ms: float | None, before_ms: float) -> Iterator[str]:
        """Rooms with no endChat whose last message is in [SINCE_MS, BEFORE_MS)."""
        window: dict[str, Any] = {"$lt": before_ms} if since_ms is None else {"$gte": since_ms, "$lt": before_ms}
        if self.messages is not None:
            rooms = {d["room"] for d in self.messages.find({"data.ts": window}, {"room": 1, "_id": 0})
                     if isinstance(d.get("room"), str)}
            for batch in batched(sorted(rooms), BATCH):  # every message of a batch of rooms in one query
                stamps: dict[str, list[Any]] = {room: [] for room in batch}
                for d in self.messages.find({"room": {"$in": batch}}, {"room": 1, "data.ts": 1,
                                                                         "data.messageType": 1, "_id": 0}):
                    if isinstance(d.get("room"), str) and d["room"] in stamps:  # not a room that is an array
                        stamps[d["room"]].append(d.get("data", {}))
                yield from (room for room in batch if _idle(stamps[room], since_ms, before_ms))
            return
        query = {"messages": {"$elemMatch": {"data.ts": window}}}
        for doc in self.chats.find(query, {"room": 1, "messages.data.ts": 1, "messages.data.messageType": 1}):
            stamps = [m.get("data", {}) for m in doc.get("messages", []) if isinstance(m, dict)]
            if _idle(stamps, since_ms, before_ms):
                yield _room_of(doc)

    def active_since(self, since_ms: float) -> Iterator[str]:
        """Rooms with any message at or after SINCE_MS (through the `archiver_ts` index)."""
        window = {"$gte": since_ms}
        if self.messages is not None:
            yield from {d["room"] for d in self.messages.find({"data.ts": window}, {"room": 1, "_id": 0})
                        if isinstance(d.get("room"), str)}
            return
        for doc in self.chats.find({"messages.data.ts": window}, {"room": 1, "_id": 1}):
            yield _room_of(doc)

    def newer_than(self, seen_ms: dict[str, float]) -> set[str]:
        """Those of SEEN_MS's rooms with a message later than the time given for the room (one query)."""
        if not seen_ms:
            return set()
        collection = self.messages if self.messages is not None else self.chats
        query = {"$or": [{"room": room, f"{self._path}data.ts": {"$gt": ms}} for room, ms in seen_ms.items()]}
        return {d["room"] for d in collection.find(query, {"room": 1, "_id": 0}) if isinstance(d.get("room"), str)}

    def load(self, room: str) -> tuple[Chat, dict[str, Any] | None]:
        """The chat document (messages embedded either way) and its contact, or None."""
        return self.load_many([room])[room]

    def load_many(self, rooms: list[str]) -> dict[str, tuple[Chat, dict[str, Any] | None]]:
        """`load` for several rooms in a few queries (one per collection), whatever their number.

        A room the source holds no single readable chat document for (two share it, or the
        driver cannot decode it) comes as a SourceProblem, to be quarantined with its reason."""
        try:
            return self._load_many(rooms)
        except BSONError as exc:  # one undecodable document fails its whole batch: find it
            if len(rooms) == 1:
                reason = f"room {rooms[0]!r}: MongoDB cannot decode it: {exc}"
                return {rooms[0]: (SourceProblem(reason, self._chat_id_only(rooms[0])), None)}
            return {room: loaded for one in rooms for room, loaded in self.load_many([one]).items()}

    def _chat_id_only(self, room: str) -> dict[str, Any] | None:
        """ROOM's chat document as its _id and room alone, when it has exactly one and that much decodes: what
        an erasure needs to delete a room whose documents cannot all be read."""
        try:
            found = list(self.chats.find({"room": {"$eq": room}}, {"_id": 1}).limit(2))
        except BSONError:
            return None
        return {"_id": found[0]["_id"], "room": room} if len(found) == 1 else None

    # -- deletion, only where a retention policy or an erasure request says so (archiver/retention.py) --

    def present(self, rooms: list[str]) -> set[str]:
        """Those of ROOMS that have a chat document, in one query."""
        return {doc["room"] for doc in self.chats.find({"room": {"$in": rooms}}, {"room": 1})}

    def rooms_of_user(self, user_id: str) -> set[str]:
        """Rooms in which USER_ID wrote a message (`data.content.user.id`, or `data.content.user` given as the id
        itself, as the transcript reads it), or which they started (contact `userID`)."""
        collection = self.messages if self.messages is not None else self.chats
        wrote = {"$or": [{f"{self._path}data.content.user{at}": {"$eq": user_id}} for at in (".id", "")]}
        rooms = {d["room"] for d in collection.find(wrote, {"room": 1, "_id": 0}) if isinstance(d.get("room"), str)}
        rooms |= {d["id"] for d in self.contacts.find({"userID": {"$eq": user_id}}, {"id": 1, "_id": 0})
                  if isinstance(d.get("id"), str)}
        return rooms

    def delete_room(self, room: str, chat_id: Any, contacts: bool) -> int:
        """An erasure: delete ROOM's contact when CONTACTS, its messages (when kept apart), then its chat document (by
        CHAT_ID), last: a chat that is gone has nothing left behind. How many documents went."""
        gone = self.contacts.delete_many({"id": {"$eq": room}}).deleted_count if contacts else 0
        if self.messages is not None:
            gone += self.messages.delete_many({"room": {"$eq": room}}).deleted_count
        return gone + self.chats.delete_one({"_id": chat_id}).deleted_count

    def delete_checked(self, room: str, chat: dict[str, Any], contact: dict[str, Any] | None, contacts: bool
                       ) -> tuple[bool, str]:
        """Retention: delete exactly the documents of ROOM that were loaded and compared with its archive: CHAT
        first, then its messages (when kept apart) and CONTACT (when CONTACTS); each only if it is still stored
        as it was read (the bytes read last, then a filter on its fields). Whether the chat went, and what was
        kept or left in MongoDB ("" if nothing): a document written meanwhile is never deleted unarchived, and a
        chat kept keeps all of it (its messages and contact too)."""
        apart = self.messages is not None
        compared = {k: v for k, v in chat.items() if k != "messages"} if apart else chat
        stored = self._as_stored(self.chats, [chat["_id"]]).get(_key(chat["_id"]))
        own = stored
        if stored is not None and apart and stored.get("messages") in (None, []):  # absent, null or []: as loaded
            own = {k: v for k, v in stored.items() if k != "messages"}
        if own is None or not _same(own, compared):
            return False, CHANGED
        loaded = [m for m in chat["messages"] if isinstance(m, dict)] if apart else []
        if apart and not self._all_unchanged(room, loaded):
            return False, ("message documents written, changed or removed since it was checked: the chat and all of "
                           "them kept")
        chat_filter = _exact(stored)  # (read above: not read again)
        if chat_filter is None or not self.chats.delete_one(chat_filter).deleted_count:
            return False, CHANGED
        if apart:
            self._delete_unchanged(self.messages, loaded)
        if contacts and contact is not None:
            self._delete_unchanged(self.contacts, [contact])
        left = self.left_of(room, contacts)
        return True, f"{left} left in MongoDB (written since it was checked, or changed since)" if left else ""

    def _all_unchanged(self, room: str, loaded: list[dict[str, Any]]) -> bool:
        """Whether ROOM's message documents are LOADED, each still stored as it was read (by its bytes), and no other."""
        assert self.messages is not None
        if self.messages.count_documents({"room": room}) != len(loaded):
            return False
        return all(len(self._unchanged(self.messages, batch)) == len(batch) for batch in batched(loaded, DELETE_BATCH))

    def _unchanged(self, collection: Collection, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those of BATCH still stored exactly as they were read (compared by their bytes: MongoDB's equality takes
        1 for 1.0 and -0.0 for 0.0), as read now."""
        now = self._as_stored(collection, [d["_id"] for d in batch])
        return [now[key] for d in batch if (key := _key(d["_id"])) in now and _same(now[key], d)]

    def _as_stored(self, collection: Collection, ids: list[Any]) -> dict[bytes, dict[str, Any]]:
        """The documents of COLLECTION with IDS as read now (decoded as `load` does), by `_key` of their _id."""
        found = {}
        for doc, lost in map(lossless.read, self._stored(collection).find({"_id": {"$in": ids}})):
            if lost is None:  # (one whose bytes the decoding does not keep is no copy of what was compared)
                found[_key(doc["_id"])] = doc
        return found

    def _delete_unchanged(self, collection: Collection, compared: list[dict[str, Any]]) -> int:
        """Delete those of COMPARED still stored exactly as they are (`_unchanged`); how many went. Deleted by a
        filter on their fields, which a write since that read no longer matches."""
        gone = 0
        for batch in batched(compared, DELETE_BATCH):
            filters = [f for f in map(_exact, self._unchanged(collection, batch)) if f is not None]
            if filters:
                gone += collection.delete_many({"$or": filters}).deleted_count
        return gone

    def left_of(self, room: str, contacts: bool = False) -> str:
        """What ROOM still has in MongoDB among its message documents (and contacts, when CONTACTS)."""
        # The implicit equality, not $eq: nx-27017's $eq matches no array (docs/decisions.md).
        counts = [(self.messages.count_documents({"room": room}) if self.messages is not None else 0, "message"),
                  (self.contacts.count_documents({"id": room}) if contacts else 0, "contact")]
        return " and ".join(f"{n} {what} document{'s' * (n != 1)}" for n, what in counts if n)

    def _load_many(self, rooms: list[str]) -> dict[str, tuple[Chat, dict[str, Any] | None]]:
        chats = {room: _one_chat(room, docs, self.mask) for room, docs in self._chat_documents(rooms).items()}
        if self.messages is not None:
            found = {room: chat for room, chat in chats.items() if isinstance(chat, dict)}
            for room, chat in list(found.items()):
                own = chat.get("messages")
                if own is not None and own != []:  # the record keeps what the platform held: never overwritten
                    chats[room] = SourceProblem(
                        f"room {room!r}: the chat document has a field 'messages' of its own, where the archiver "
                        f"puts the messages of the collection {self.messages.name!r} (source.messages); "
                        "not archived until a person decides", chat)  # readable: an erasure deletes it
                    del found[room]
                else:  # absent, [] or null: nothing to lose (a platform's schema default, say)
                    chat["messages"] = []
            lossy: dict[str, str] = {}
            query = {"room": {"$in": list(found)}}
            for doc in self._stored(self.messages).find(query).sort("_id", ASCENDING) if found else ():
                msg, raw = lossless.read(doc)
                for room in _named_in_array(msg, "room", found):
                    lossy.setdefault(room, self.mask(_in_array(room, "message", msg, "room")))
                if isinstance(msg.get("room"), str):
                    held = found[msg["room"]]["messages"]
                    if raw is not None and msg["room"] not in lossy:
                        lossy[msg["room"]] = self.mask(lossless.loss(raw, f"chat.messages.{len(held)}"))
                    held.append(msg)
            chats.update({room: SourceProblem(reason, found[room]) for room, reason in lossy.items()})
        contacts: dict[str, list[tuple[dict[str, Any], bytes | None]]] = {}
        strays: dict[str, str] = {}  # room -> a contact naming it in an array
        for doc, raw in map(lossless.read, self._stored(self.contacts).find({"id": {"$in": rooms}})):
            if isinstance(doc.get("id"), str):
                contacts.setdefault(doc["id"], []).append((doc, raw))
            for room in _named_in_array(doc, "id", rooms):
                strays.setdefault(room, self.mask(_in_array(room, "contact", doc, "id")))
        loaded: dict[str, tuple[Chat, dict[str, Any] | None]] = {}
        for room in rooms:
            chat, found = chats.get(room), contacts.get(room, [])
            if room in strays and isinstance(chat, dict):
                chat = SourceProblem(strays[room], chat)
            elif len(found) > 1 and isinstance(chat, dict):  # never one of them silently, the other left out
                ids = ", ".join(repr(doc.get("_id")) for doc, _ in found)
                chat = SourceProblem(f"{len(found)} contact documents have id {room!r} (_id {ids}); the chat is "
                                     "not archived until a person decides which one is its contact", chat)
            elif found and found[0][1] is not None and isinstance(chat, dict):
                chat = SourceProblem(self.mask(lossless.loss(found[0][1], "contact")), chat)
            loaded[room] = (chat, found[0][0] if found else None)
        return loaded

    def _chat_documents(self, rooms: list[str]) -> dict[str, list[tuple[dict[str, Any], bytes | None]]]:
        """Every chat document of each room: by `room`, or by `_id` for a chat without a room of its own;
        each with the server's bytes when decoding does not keep them (lossless.read)."""
        found: dict[str, list[tuple[dict[str, Any], bytes | None]]] = {}
        # `$in` also matches an array holding a room: such documents are not that room's.
        for doc, raw in map(lossless.read, self._stored(self.chats).find({"room": {"$in": rooms}})):
            if isinstance(doc.get("room"), str):
                found.setdefault(doc["room"], []).append((doc, raw))
        unnamed = [room for room in rooms if room not in found]
        if unnamed:  # a chat with a room of its own is that room's, whatever its _id says
            for doc, raw in map(lossless.read, self._stored(self.chats).find({"_id": {"$in": unnamed}})):
                if not _has_room(doc):
                    found.setdefault(doc["_id"], []).append((doc, raw))
        return found

    def _stored(self, collection: Collection) -> Collection:
        """COLLECTION returning documents as the bytes the server sent (for lossless.read)."""
        return collection.with_options(codec_options=STORED) if self._bytes else collection


@dataclass(frozen=True)
class SourceProblem:
    """Why the source gives no single readable chat document for a room (the job is quarantined)."""
    reason: str
    readable: dict[str, Any] | None = None  # the chat document (or its _id and room alone): for an erasure


Chat = dict[str, Any] | SourceProblem | None


def _one_chat(room: str, docs: list[tuple[dict[str, Any], bytes | None]], mask: Callable[[str], str]
              ) -> dict[str, Any] | SourceProblem:
    if len(docs) == 1:
        chat, raw = docs[0]
        return chat if raw is None else SourceProblem(mask(lossless.loss(raw, "chat")), chat)
    ids = ", ".join(repr(doc.get("_id")) for doc, _ in docs)
    return SourceProblem(f"{len(docs)} chat documents have room {room!r} (_id {ids}); none is archived "
                         "until a person decides which one is the chat")




def _named_in_array(doc: dict[str, Any], field: str, rooms: Any) -> list[str]:
    """Those of ROOMS that DOC's FIELD is an array holding (`$in` matched it for them)."""
    value = doc.get(field)
    return [room for room in rooms if room in value] if isinstance(value, list) else []


def _in_array(room: str, what: str, doc: dict[str, Any], field: str) -> str:
    # Not dropped without a word (it was, and retention's `$eq` then deleted it with the room's): a person decides.
    return (f"room {room!r}: a {what} document (_id {doc.get('_id')!r}) has {field} {doc.get(field)!r}, an array "
            f"holding the room, not the text {room!r}: not archived until a person decides whether it is this "
            "chat's")


def _key(value: Any) -> bytes:
    """VALUE as BSON: an _id to look up by (a document's _id is no dict key), exact for any type."""
    return bson.encode({"": value})


def _same(stored: dict[str, Any], compared: dict[str, Any]) -> bool:
    """Whether STORED is COMPARED exactly: type, sign, field order (BSON's bytes; False if either cannot be
    encoded). The top level's order is the decoder's either way, so it is not compared."""
    try:
        return len(stored) == len(compared) and all(
            k in compared and bson.encode({"": v}, codec_options=TOLERANT) == bson.encode(
                {"": compared[k]}, codec_options=TOLERANT) for k, v in stored.items())
    except (BSONError, UnicodeEncodeError, TypeError):
        return False


def _exact(doc: dict[str, Any]) -> dict[str, Any] | None:
    """A filter matching DOC only while it has the same fields, each scalar equal and each array as long: what a
    write after the last read changes (a late message $pushed, a field set or added). A sub-document is left to
    that read's byte comparison: nx-27017 matches no document or array holding an ObjectId by equality
    (docs/decisions.md). None if a field's name cannot be put in a filter ('$' first, a '.'), so it is not deleted."""
    if any(not k or k.startswith("$") or "." in k for k in doc):
        return None
    fields = {k: {"$size": len(v)} if type(v) is list else {"$eq": v} for k, v in doc.items() if type(v) is not dict}
    # $and, not $expr beside the fields: nx-27017 then reads the $expr alone (and deleted another chat)
    return {"$and": [fields, {"$expr": {"$eq": [{"$size": {"$objectToArray": "$$ROOT"}}, len(doc)]}}]}


def _has_room(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("room"), str) and bool(doc["room"])


def _room_of(doc: dict[str, Any]) -> str:
    # A chat without a usable room still has to be reported, so it is addressed by _id.
    return doc["room"] if _has_room(doc) else str(doc.get("_id"))


def newest_ms(chat: dict[str, Any]) -> float | None:
    """The time of the chat's newest message (ms since epoch), None when no message has a usable one."""
    messages = chat.get("messages")
    return _newest([m.get("data") for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [])


def _newest(datas: list[Any]) -> float | None:
    stamps = [_ms(d.get("ts")) for d in datas if isinstance(d, dict)]
    return max((s for s in stamps if s is not None), default=None)


# Milliseconds within which every number is a readable time (years 1 to 9999): taken as they are.
_READABLE_MS = (-62_135_596_800_000, 253_402_300_799_000)


def _ms(ts: Any) -> float | None:
    """TS in ms since epoch; a number as given (a datetime would round it, and the source compares
    the stored number), None when it is no readable time."""
    if type(ts) in (int, float) and _READABLE_MS[0] <= ts <= _READABLE_MS[1]:  # the usual case, without a datetime
        return float(ts)
    when = to_datetime(ts)
    if when is None:
        return None
    return float(ts) if isinstance(ts, (int, float, Int64)) and not isinstance(ts, bool) else when.timestamp() * 1000


def _idle(datas: list[Any], since_ms: float | None, before_ms: float) -> bool:
    if any(isinstance(d, dict) and d.get("messageType") == END_TYPE for d in datas):
        return False
    latest = _newest(datas)
    return latest is not None and latest < before_ms and (since_ms is None or latest >= since_ms)
