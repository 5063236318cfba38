"""Cost of an attachment: a 30-message chat built with and without files, served from 127.0.0.1.

    python bench/attachments.py --files 5 --rounds 20

Times ArtifactBuilder.build (fetch, sniff, thumbnail, render, sign, encrypt; no store put) in this
process, for the same chat with no files, with FILES photos (a 1600x1200 JPEG, about 0.5 MB) and with FILES
documents (a 300 kB PDF-like file), and prints the median cost per file.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import io
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bson import ObjectId
from PIL import Image

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tests"))

from archiver import config as config_module  # noqa: E402
from archiver.artifacts import ArtifactBuilder  # noqa: E402
from archiver.keys import create_development_keys  # noqa: E402
from archiver.samples import make_chat  # noqa: E402
from attachment_server import Files, serve  # noqa: E402


def photo() -> bytes:
    """A phone-photo-like JPEG: smooth gradients with sensor-like noise, 1600x1200."""
    size = (1600, 1200)
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 40)
    image = Image.merge("RGB", (gradient, Image.blend(gradient.rotate(90).resize(size), noise, 0.3), noise))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def with_files(chat: dict, kind: str, urls: list[str]) -> dict:
    chat = copy.deepcopy(chat)
    end = chat["messages"].pop()
    user = chat["messages"][0]["data"]["content"]["user"]
    for i, url in enumerate(urls):
        chat["messages"].append({"data": {"replyTo": "", "id": f"f{i}", "messageType": kind,
                                          "content": {"url": url, "user": user}, "ts": end["data"]["ts"] - 100 + i,
                                          "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None},
                                 "_id": ObjectId(), "room": chat["room"]})
    chat["messages"].append(end)
    return chat


def timed(builder: ArtifactBuilder, chat: dict, contact: dict, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        builder.build(chat, contact, "ended", 1, dt.datetime.now(dt.timezone.utc))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    keys = create_development_keys(Path(tempfile.mkdtemp()))
    config = config_module.load(None, environ={}).with_overrides(**{
        "signing.certificate": str(keys["signing.crt.pem"]), "signing.key": str(keys["signing.key.pem"]),
        "encryption.recipients": [str(keys["legal.crt.pem"])], "attachments.enabled": True,
        "attachments.hosts": ["127.0.0.1"], "attachments.allowed_networks": ["127.0.0.1/32"]})
    builder = ArtifactBuilder.from_config(config)
    chat, contact = make_chat(random.Random(7), messages=30)
    for m in chat["messages"]:  # only the files we add
        if m["data"]["messageType"] in ("IMAGE", "DOCUMENT", "LINK"):
            m["data"]["messageType"] = "TEXT"
            m["data"]["content"] = {"text": "ok", "user": m["data"]["content"]["user"]}
    files = Files()
    jpeg, document = photo(), b"%PDF-1.4\n" + os.urandom(300_000)
    for i in range(args.files):
        files.add(f"/p{i}.jpg", jpeg)
        files.add(f"/d{i}.pdf", document)
    server = serve(files)
    base = next(server)
    bare = timed(builder, chat, contact, args.rounds)
    photos = timed(builder, with_files(chat, "IMAGE", [f"{base}/p{i}.jpg" for i in range(args.files)]), contact,
                   args.rounds)
    docs = timed(builder, with_files(chat, "DOCUMENT", [f"{base}/d{i}.pdf" for i in range(args.files)]), contact,
                 args.rounds)
    print(f"chat without files: {bare * 1000:.1f} ms")
    print(f"with {args.files} photos ({len(jpeg):,} B JPEG, 1600x1200): {photos * 1000:.1f} ms, "
          f"{(photos - bare) / args.files * 1000:.1f} ms per photo")
    print(f"with {args.files} documents ({len(document):,} B): {docs * 1000:.1f} ms, "
          f"{(docs - bare) / args.files * 1000:.1f} ms per document")
    server.close()


if __name__ == "__main__":
    main()
