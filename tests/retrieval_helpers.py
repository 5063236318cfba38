"""Archive a few sample chats for the retrieval, search and verification tests."""

from __future__ import annotations

import random
import json
import secrets
import zipfile
from pathlib import Path
from typing import Any

from archiver.cli import main
from archiver.config import Config
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from conftest import write_toml
from test_pipeline import recent_ms, seed

LANGUAGES = ("it", "en", "ru", "en")
SERVICES = ("Assistenza clienti", "Billing", "Assistenza clienti", "Sales")


CLI_KEYS = ("mongodb.uri", "index.database", "storage.url", "storage.endpoint_url", "encryption.recipients",
            "signing.trust_anchors", "signing.certificate")  # (no key: verify pins signatures to the certificate)


def run_cli(config: Config, tmp_path: Path, *argv: str) -> int:
    """`archiver ARGV` with CONFIG's settings written to a TOML file, as a legal team would run it."""
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in CLI_KEYS})
    return main(["--config", str(toml), *argv])


def stored_path(config: Config, key: str) -> Path:
    """The file of KEY in CONFIG's local store."""
    return Path(config["storage.url"][len("file://"):]) / key


def remove_stored(config: Config, key: str) -> None:
    """Remove a (read-only) stored object, as an attacker with disk access would."""
    path = stored_path(config, key)
    path.chmod(0o644)
    path.unlink()


def overwrite_stored(config: Config, key: str, data: bytes) -> None:
    """Replace a (read-only) stored object's bytes, as an attacker with disk access would."""
    path = stored_path(config, key)
    path.chmod(0o644)
    path.write_bytes(data)


def search_key(tmp_path: Path) -> Path:
    path = tmp_path / "search.key"
    path.write_text(secrets.token_hex(32) + "\n")
    return path


def archive_samples(config: Config, count: int = 4, rng_seed: int = 5) -> list[dict[str, Any]]:
    """COUNT chats (languages and services varying), archived; their index entries by room."""
    rng = random.Random(rng_seed)
    chats = []
    for i in range(count):
        chat, contact = make_chat(rng, messages=8, language=LANGUAGES[i % 4], start_ms=recent_ms(60 - i))
        contact["serv_name"] = SERVICES[i % 4]
        chats.append((chat, contact))
    seed(config, chats)
    report = Archiver(config).run_pass()
    assert report.archived == count, report
    return list(index(config).find({}).sort("room", 1))


def index(config: Config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.entries"]]


def audit(config: Config) -> list[dict[str, Any]]:
    db = connect(config["mongodb.uri"])[config["index.database"]]
    return list(db[config["index.audit"]].find({}, {"_id": 0}).sort("seq", 1))


def refuse_audit(monkeypatch: Any, config: Config, allowed: int = 0) -> None:
    """After ALLOWED more entries, every append to CONFIG's audit log fails as a full disk makes it fail
    (the database's own error, raised by the driver's insert; other collections are untouched)."""
    import mongomock
    from pymongo.collection import Collection
    from pymongo.errors import WriteError

    left = [allowed]
    for cls in (Collection, mongomock.collection.Collection):
        real = cls.insert_one

        def insert_one(self, document, *args, _real=real, **kwargs):
            if self.name == config["index.audit"]:
                if left[0] <= 0:
                    raise WriteError("No space left on device", code=14031)
                left[0] -= 1
            return _real(self, document, *args, **kwargs)
        monkeypatch.setattr(cls, "insert_one", insert_one)


def retention_runs_during_fetch(monkeypatch, module, config: Config) -> None:
    """A retention run deletes the archive between MODULE's command reading its entry and fetching its objects."""
    from retention_helpers import age, retention

    real = module.check_stored

    def retention_runs_now(found, store):
        age(config, 400)
        assert retention(config).ok
        return real(found, store)

    monkeypatch.setattr(module, "check_stored", retention_runs_now)


def zipped_json(bundle: Path, name: str) -> Any:
    """The JSON file NAME inside the zip BUNDLE."""
    return json.loads(zipped_text(bundle, name))


def zipped_text(bundle: Path, name: str) -> str:
    """The text file NAME inside the zip BUNDLE."""
    with zipfile.ZipFile(bundle) as zf:
        return zf.read(name).decode("utf-8")
