"""`archiver demo`: the whole path on the embedded default, with nothing to install or configure."""

from __future__ import annotations

import json
import random
import shlex
import time
import zipfile
from pathlib import Path

from archiver import config as config_module
from archiver import logs
from archiver.commands.common import SETTINGS_ENVIRONMENT
from archiver.keys import create_development_keys
from archiver.mongo import connect
from archiver.offline import export_room
from archiver.pipeline import Archiver
from archiver.samples import SEED_CHAT, make_chat

DEMO_URI = "mongomock://demo"


def _fresh_stand_in() -> str:
    """DEMO_URI, or DEMO_URI-2, -3 ...: the first stand-in of this process that holds nothing yet, so that a demo
    run again in the same process starts from empty databases (its sample chats and audit log anew)."""
    uri, n = DEMO_URI, 1
    while connect(uri).list_database_names():
        n += 1
        uri = f"{DEMO_URI}-{n}"
    return uri


def _seed_source(config: config_module.Config) -> list[str]:
    db = connect(config["mongodb.uri"])[config["source.database"]]
    rng = random.Random(7)
    chats = [(SEED_CHAT, None)]
    chats += [make_chat(rng, messages=rng.randint(5, 40), language=lang) for lang in ("it", "en", "ru", "el", "ar", "zh", "ja")]
    chats.append(make_chat(rng, messages=6, ended=False))  # still running: not archived
    end = {"data": {"messageType": "endChat", "ts": 1642604409492.0, "content": {"user": {"id": "USER_x"}}}}
    chats.append(({"_id": "CHAT_BROKEN", "room": "CHAT_BROKEN", "messages": [{"data": "not-an-object"}, end]}, None))
    for chat, contact in chats:
        db[config["source.chats"]].insert_one(chat)
        if contact:
            db[config["source.contacts"]].insert_one(contact)
    return [chat["room"] for chat, _ in chats]


def run_demo(directory: Path) -> int:
    directory = directory.resolve()
    earlier = (directory / "store").is_dir() and any((directory / "store").iterdir())
    keys = directory / "keys"
    if not (keys / "signing.key.pem").exists():
        create_development_keys(keys)
    # The demo's own settings alone, in every step: no ARCHIVER_* variable, no ARCHIVER_CONFIG.
    config = config_module.load(None, environ={}).with_overrides(**{
        "mongodb.uri": _fresh_stand_in(),
        "storage.url": f"file://{directory / 'store'}",
        "signing.certificate": str(keys / "signing.crt.pem"),
        "signing.key": str(keys / "signing.key.pem"),
        "signing.trust_anchors": [str(keys / "ca.crt.pem")],
        "encryption.recipients": [str(keys / "legal.crt.pem")],
        "archive.workers": 1,
        "logging.level": "WARNING",
        "logging.format": "text",
    })
    logs.configure("WARNING", "text")
    rooms = _seed_source(config)
    print(f"Seeded {len(rooms)} sample chats into the in-process stand-in {config['mongodb.uri']} "
          "(one still running, one deliberately broken).")
    archiver = Archiver(config)
    report = archiver.run_pass()
    print(f"\nArchive pass: {report.archived} archived, {len(report.quarantined)} quarantined "
          f"in {report.seconds:.1f} s")
    for room, reason in report.quarantined.items():
        print(f"  quarantined {room}: {reason}")
    print(f"\nEncrypted objects in {archiver.store.url}:")
    for key in archiver.store.keys():
        print(f"  {key}")
    running = rooms[-2]
    export_dir = directory / "export" / time.strftime("%Y%m%dT%H%M%S")
    outcome = export_room(config, running, export_dir, force=True)
    print(f"\nOn-demand export of the chat still running, {running} (--force, marked interim):")
    print("\n".join(outcome.lines))
    print(f"\nKeys (development only) in {keys}. Check the artefacts with tools we did not write:")
    pdf = export_dir / f"{running}.pdf"
    print(f"  pdfsig {pdf}")
    print(f"  openssl cms -verify -binary -inform DER -in {pdf.with_suffix('.json.p7s')} "
          f"-content {pdf.with_suffix('.json')} -CAfile {keys / 'ca.crt.pem'} -out /dev/null")
    first = next(k for k in archiver.store.keys() if k.endswith(".pdf.p7m"))
    print(f"  openssl cms -decrypt -binary -inform DER -in {directory / 'store' / first} "
          f"-inkey {keys / 'legal.key.pem'} -out {directory / 'opened-transcript.pdf'}")  # beside the store, not in it
    return _legal_team(config, directory, keys, export_dir.name, [SEED_CHAT["room"], rooms[1]], earlier)


def _legal_team(config: config_module.Config, directory: Path, keys: Path, stamp: str,
                bundled: list[str], earlier: bool) -> int:
    """What a legal team does next, with the real commands: search, retrieve, verify, a case bundle. Its own
    configuration: no transcript signing key (its host decrypts), and its own identity for bundles' manifests."""
    from archiver.cli import main

    (directory / "archiver.toml").write_text(_toml(config), encoding="utf-8")  # the archiving host's
    toml = directory / "legal-team.toml"
    toml.write_text(_toml(config, keys), encoding="utf-8")
    key = str(keys / "legal.key.pem")
    steps = [
        ("Search the index for chats that ended in January 2022 (the platform's documented example):",
         ["search", "--from", "2022-01-01", "--to", "2022-01-31"]),
        ("Retrieve it: fetched, decrypted with the legal team's key, verified, written with verification.json:",
         ["retrieve", SEED_CHAT["room"], "--key", key, "--out", str(directory / "retrieved" / stamp),
          "--reason", "demo: a customer complaint", "--ca", str(keys / "ca.crt.pem")]),
        ("Verify it against the index and the store, content and signatures included:",
         ["verify", SEED_CHAT["room"], "--key", key, "--workers", "1"]),
        ("A case bundle of two chats (README.txt inside says how to check every file with openssl, pdfsig, "
         "certutil and sha256sum alone):",
         ["retrieve", *bundled, "--bundle", str(directory / "bundles" / f"case-{stamp}.zip"), "--key", key,
          "--reason", "demo: a regulator request", "--no-progress"]),
        ("The audit log recorded each of these (who, when, why, what); its hash chain checks out:",
         ["audit", "verify"]),
    ]
    for why, argv in steps:
        print(f"\n{why}\n$ archiver --config {toml} {shlex.join(argv)}", flush=True)
        own_settings = SETTINGS_ENVIRONMENT.set({})  # toml alone: no ARCHIVER_* override
        try:
            code = main(["--config", str(toml), *argv, *(["--actor", "demo"] if argv[0] in ("search", "retrieve",
                                                                                              "verify") else [])])
        finally:
            SETTINGS_ENVIRONMENT.reset(own_settings)
        if code == 3 and argv[0] == "verify" and earlier:
            print(f"(exit code 3: {directory / 'store'} holds objects of an earlier demo run, which this run's "
                  "in-process index does not know; verify names each one. A fresh --dir verifies clean.)")
        elif code:
            print(f"(exit code {code})")
            return code
    bundle = directory / "bundles" / f"case-{stamp}.zip"
    with zipfile.ZipFile(bundle) as zf:
        print(f"\nInside {bundle}:")
        print("\n".join(f"  {name}" for name in zf.namelist()))
    print(f"Its README.txt reads CA.pem ({keys / 'ca.crt.pem'}: the archive's CA) and BUNDLE-CA.pem "
          f"({keys / 'bundle-ca.crt.pem'}: the CA of the legal team's bundle signer) next to the unzipped folder.")
    print(f"\nThe commands above ran inside this process: the demo's MongoDB ({config['mongodb.uri']}) is an "
          f"in-process stand-in, gone when it ends. To run them yourself, set mongodb.uri in {toml} (and in "
          f"{directory / 'archiver.toml'}, the archiving host's, with the transcript signing key) to a "
          "MongoDB server that holds chats, and storage.url to a new folder (this store holds the demo's objects, "
          "which that server's index will not know: verify would name each one), and run `archiver run` first "
          "(README.md, first section).")
    return 0


def _toml(config: config_module.Config, legal_team: Path | None = None) -> str:
    """The demo's settings as a configuration file: the archiving host's, or with LEGAL_TEAM (its keys folder)
    the legal team's, for the commands above (no signing.key; its bundle signer). It says that its index lives
    only inside the demo's process, so that the same commands typed into a shell find nothing."""
    lines = ["# The settings of `archiver demo`. mongodb.uri is an in-process stand-in: its chats and index live",
             "# only inside the demo's own process, so these commands, typed into a shell, find nothing. To try",
             "# them yourself, set mongodb.uri to a MongoDB server that holds chats, storage.url to a new folder",
             "# (this store holds the demo's objects, which that index will not know), and run `archiver run` first."]
    signing = ["certificate", "trust_anchors"] if legal_team else ["certificate", "key", "trust_anchors"]
    for section, keys in (("mongodb", ["uri"]), ("storage", ["url"]), ("signing", signing),
                          ("encryption", ["recipients"])):
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(config[f'{section}.{key}'])}" for key in keys]
    if legal_team and (legal_team / "bundle.key.pem").exists():  # (a keys folder of an older demo has none)
        lines += ["[bundle]", f"signing_certificate = {json.dumps(str(legal_team / 'bundle.crt.pem'))}",
                  f"signing_key = {json.dumps(str(legal_team / 'bundle.key.pem'))}"]
    return "\n".join(lines) + "\n"
