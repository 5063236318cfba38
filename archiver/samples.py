"""Sample chats shaped like the platform's (docs/source-schema.md), for the demo, tests and benchmark."""

from __future__ import annotations

import random
import uuid
from typing import Any

from bson import ObjectId

PHRASES = {
    "it": ["Buongiorno, come posso esserle utile?", "Il mio ordine non è ancora arrivato.",
           "Può darmi il numero d'ordine, per favore?", "Certo: è il 4711. Perché è così in ritardo?",
           "Mi scusi per l'attesa, verifico subito con il corriere.", "Grazie mille, è stato gentilissimo!"],
    "en": ["Hello, how can I help you today?", "My invoice shows the wrong amount.",
           "Could you send me the invoice number?", "Sure, it is INV-2022-0042.", "Thanks, all sorted now."],
    "ru": ["Здравствуйте! Чем могу помочь?", "Мой заказ задерживается.", "Спасибо за ожидание."],
    "el": ["Καλημέρα, πώς μπορώ να βοηθήσω;", "Η παραγγελία μου δεν έφτασε.", "Ευχαριστώ πολύ!"],
    "ar": ["مرحبا، كيف يمكنني مساعدتك؟", "لم يصل طلبي بعد.", "شكرا جزيلا"],
    "zh": ["您好，请问有什么可以帮您？", "我的订单还没有到。", "谢谢您的耐心等待。"],
    "ja": ["こんにちは、ご用件をお伺いします。", "注文がまだ届いていません。"],
}
CHANNELS = ["web", "whatsapp", "messenger", "instagram"]
TYPES = ["chat", "cbn", "cbl", "cbfs", "call"]


def make_chat(
    rng: random.Random, *, messages: int = 30, language: str = "it", ended: bool = True,
    start_ms: float = 1642604343631.0, room: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A chat document (embedded messages, as in the seed) and its contact document."""
    room = room or f"CHAT_DEFAULT_{uuid.UUID(int=rng.getrandbits(128))}"
    agent = f"USER_agent{rng.randint(1, 40)}@acd.example.com"
    customer = str(rng.randint(10**15, 10**16 - 1))
    channel = rng.choice(CHANNELS)
    ts = start_ms
    body = []
    for i in range(messages - (1 if ended else 0)):
        ts += rng.uniform(2_000, 60_000)
        is_agent = i % 2 == 1
        body.append(_message(room, rng, ts, agent if is_agent else customer, is_agent, language, i))
    if ended:
        ts += rng.uniform(2_000, 60_000)
        body.append(_envelope(room, rng, ts, "endChat", {"user": {"isAgent": True, "id": agent}}))
    chat = {"_id": room, "room": room, "ctlive_type": rng.choice(TYPES), "messages": body, "__v": 0}
    contact = {
        "id": room, "servid": "42", "serv_name": "Assistenza clienti", "widgetid": "w-1",
        "beginTime": start_ms, "endTime": ts if ended else None, "title": "Chat", "lang": language,
        "userID": customer, "agentID": agent,
        "users": {
            customer: {"nickname": "Cliente", "channel": channel, "firstIP": "203.0.113.7"},
            agent: {"nickname": "Operatore", "channel": "web"},
        },
        "contact_events": [{"event": "newContactAccepted", "ts": start_ms, "origin": "acd"}],
        "ctlive_type": chat["ctlive_type"],
    }
    return chat, contact


def _message(room: str, rng: random.Random, ts: float, user: str, is_agent: bool, language: str, i: int) -> dict:
    if rng.random() < 0.08:
        kind = rng.choice(["IMAGE", "DOCUMENT", "LINK"])
        content = {"url": f"https://files.example.com/{room[-8:]}/{i}.bin", "user": {"id": user, "isAgent": is_agent}}
    else:
        kind = "TEXT"
        content = {"text": rng.choice(PHRASES[language]), "user": {"id": user, "isAgent": is_agent}}
    return _envelope(room, rng, ts, kind, content, delivered=rng.random() > 0.02)


def _envelope(room: str, rng: random.Random, ts: float, kind: str, content: dict, delivered: bool = True) -> dict:
    return {
        "data": {
            "replyTo": "", "id": str(uuid.UUID(int=rng.getrandbits(128))), "messageType": kind,
            "content": content, "ts": round(ts, 0), "deliverySuccess": delivered,
            "deliveryErrorReason": "" if delivered else "recipient unreachable", "messageSeen": None,
        },
        "_id": ObjectId(),
        "room": room,
    }


# The example from the platform's documentation, with its missing comma restored.
SEED_ROOM = "CHAT_DEFAULT_8857106a-55b8-4c47-a5af-a3aae7530e5a"
SEED_CHAT: dict[str, Any] = {
    "_id": SEED_ROOM,
    "room": SEED_ROOM,
    "ctlive_type": "chat",
    "messages": [
        {"data": {"replyTo": "", "id": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDUwODQxMzk0OTA4OjM0MDI4MjM2Njg0MTcxMDMwMDk0OTEyODE2NzQwNTg4MTcxMjQ0NzozMDMwMDcwMTg3NTA5MTIwMjkwMzUzNDkzMzgzMjEwNTk4NAZDZD",
                  "messageType": "TEXT", "content": {"text": "prova1", "user": {"id": "4747235938674011", "isAgent": False}},
                  "ts": 1642604343631.0, "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None},
         "_id": ObjectId("61e8277aef3d6b076066d287"), "room": SEED_ROOM},
        {"data": {"replyTo": "", "id": "fb32e661-136d-4867-a1f8-a31eca5b673a", "messageType": "TEXT",
                  "content": {"text": "Buongiorno, sono l'operatore Gabriele Verde, come posso esserle utile?",
                              "user": {"id": "USER_gverde1@acd.enghouse.com", "isAgent": True}},
                  "ts": 1642604351616.0, "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None},
         "_id": ObjectId("61e8277aef3d6b076066d288"), "room": SEED_ROOM},
        {"data": {"replyTo": "", "id": "ba35d81d-d56e-49b4-ae17-020b9e477281", "messageType": "endChat",
                  "ts": 1642604409492.0, "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None,
                  "content": {"user": {"isAgent": True, "id": "USER_gverde1@acd.enghouse.com"}}},
         "_id": ObjectId("61e8277aef3d6b076066d289"), "room": SEED_ROOM},
    ],
    "__v": 0,
}
