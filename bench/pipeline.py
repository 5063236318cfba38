"""Benchmark: a full archive pass into the local store and into moto's S3 server.

Prints chats/s, messages/s, time per stage, peak memory, and the ratio of the
end-to-end rate to the "bare" rate of render+sign+encrypt run back to back on
the same chats with the same number of worker processes, all from one run.

MongoDB is nx-27017 started in its own process, as a real server would be (or
--mongodb-uri, or --db mongomock for the in-process stand-in, whose every query
scans the whole collection: it measures mongomock more than the archiver).

    python bench/pipeline.py                       # 2,000 chats, 5-300 messages
    python bench/pipeline.py --chats 2000 --messages 30 --repeat 3
    python bench/pipeline.py --signing-key rsa3072   # an RSA-3072 signing identity instead of ECDSA P-256
    python bench/pipeline.py --signing-cost          # signatures per chat: ECDSA against RSA-3072

--signing-cost also prints what a chat's two signatures (the PDF's and the record's
.p7s) cost with an ECDSA P-256 and an RSA-3072 key, beside one private-key operation
of each: with RSA-3072 those two operations alone are the floor of its extra cost.

Each run also prints the CPU time per chat of each process: the main process, the
worker processes, and the MongoDB stand-in (nx-27017) apart, whose cost a real
MongoDB on another machine would not add to ours.
"""

from __future__ import annotations

import argparse
import logging
import concurrent.futures as cf
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from archiver import artifacts
from archiver import config as config_module
from archiver.claims import now
from archiver.keys import create_development_keys
from archiver.logs import configure
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.redaction import Redactor
from archiver.render.record import source_digest
from archiver.samples import PHRASES, make_chat
from archiver.source import ChatSource

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nxserver import start_nx  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
STAGES = ("discover", "claim", "read", "redact", "render", "sign", "encrypt", "put", "index")


def generate(count: int, messages: int | None, seed: int = 1) -> list[tuple[dict, dict]]:
    rng = random.Random(seed)
    start = (time.time() - 3600) * 1000
    languages = list(PHRASES)
    return [make_chat(rng, messages=messages or rng.randint(5, 300), language=rng.choice(languages), start_ms=start)
            for _ in range(count)]


def _seed(config: config_module.Config, chats: list[tuple[dict, dict]]) -> None:
    db = connect(config["mongodb.uri"])[config["source.database"]]
    for start in range(0, len(chats), 1000):
        db.chats.insert_many([dict(c) for c, _ in chats[start:start + 1000]])
        db.contacts.insert_many([dict(k) for _, k in chats[start:start + 1000]])
    ChatSource(db, "chats", "contacts").create_indexes()  # as `archiver indexes --create` would


def _config(keys: dict[str, Path], storage_url: str, workers: int, mongodb_uri: str = "",
            **extra) -> config_module.Config:
    tag = uuid.uuid4().hex[:8]
    return config_module.load(None, environ={}).with_overrides(**{
        "mongodb.uri": mongodb_uri or f"mongomock://bench-{tag}",
        "source.database": f"bench_src_{tag}",
        "index.database": f"bench_idx_{tag}",
        "storage.url": storage_url,
        "signing.certificate": str(keys["signing.crt.pem"]),
        "signing.key": str(keys["signing.key.pem"]),
        "encryption.recipients": [str(keys["legal.crt.pem"])],
        "archive.workers": workers,
        "logging.level": "WARNING",
        **extra,
    })


def rsa_signing_identity(folder: Path) -> dict[str, Path]:
    """An RSA-3072 signing key and self-signed certificate (what many corporate CAs issue), as PEM files."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(65537, 3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Transcript signing (bench, RSA-3072)")])
    moment = dt.datetime.now(dt.timezone.utc)
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    usage.update(digital_signature=True, content_commitment=True)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(moment - dt.timedelta(minutes=5))
            .not_valid_after(moment + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(**usage), critical=True).sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"signing.crt.pem": folder / "signing.crt.pem", "signing.key.pem": folder / "signing.key.pem"}
    paths["signing.crt.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["signing.key.pem"].touch(mode=0o600)  # the archiver warns about a key others can read
    paths["signing.key.pem"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def process_cpu(pid: int | None, own: bool = True) -> float:
    """CPU seconds of process PID (unless not OWN) and of the children it has reaped (from /proc); 0 if
    there is none."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of stat(5)
    return sum(int(v) for v in fields[11 if own else 13:15]) / TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def forkserver_pid() -> int | None:
    """The fork server the archiver's worker processes come from (it reaps them: their CPU is its children's)."""
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def bare_rate(config: config_module.Config, chats: list[tuple[dict, dict]], workers: int) -> tuple[float, float]:
    """Chats/s for render+sign+encrypt only, on the same worker processes setup, and the workers' CPU ms per chat."""
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=artifacts.init_worker,
                                initargs=(config,)) as pool:
        list(pool.map(_warm, range(workers)))
        cpu = _workers_cpu(pool)
        started = time.perf_counter()
        for _ in pool.map(_build, chats, chunksize=8):
            pass
        rate = len(chats) / (time.perf_counter() - started)
        cpu = _workers_cpu(pool) - cpu
    return rate, 1000 * cpu / len(chats)


def _workers_cpu(pool: cf.ProcessPoolExecutor) -> float:
    return sum(process_cpu(pid) for pid in list(pool._processes))


def _warm(_: int) -> None:
    time.sleep(0.2)  # let every worker finish its initializer before timing


def _build(chat_contact: tuple[dict, dict]) -> int:
    chat, contact = chat_contact
    return len(artifacts.worker_builder().build(chat, contact, "ended", 1, now()).blobs)


def end_to_end(config: config_module.Config, chats: list[tuple[dict, dict]], database_pid: int | None = None) -> dict:
    _seed(config, chats)
    archiver = Archiver(config)
    # The workers' CPU (their start included) is what the fork server reaped: its own is its start-up, once
    # per archiver process.
    before = own_cpu(), process_cpu(forkserver_pid(), own=False), process_cpu(database_pid), children_cpu()
    report = archiver.run_pass()
    after = own_cpu(), process_cpu(forkserver_pid(), own=False), process_cpu(database_pid), children_cpu()
    assert report.archived == len(chats), f"only {report.archived} of {len(chats)} archived: {report.failed}"
    messages = sum(len(c["messages"]) for c, _ in chats)
    main, workers, database, _ = (1000 * (a - b) / len(chats) for a, b in zip(after, before))
    server = forkserver_pid()
    return {"chats_per_s": len(chats) / report.seconds, "messages_per_s": messages / report.seconds,
            "seconds": report.seconds, "stages": report.stages,
            "cpu_ms": {"main": main, "workers": workers, "database": database},
            "fork_server_s": process_cpu(server) - process_cpu(server, own=False)}


def redaction_cost(chats: list[tuple[dict, dict]]) -> None:
    """CPU per chat of redaction with the default rules, on and off, in one process: alone, and as the
    main process pays it (redact, then the source digest) against the digest alone (before redaction)."""
    base = config_module.load(None, environ={})
    on, off = Redactor.from_config(base), Redactor.from_config(base.with_overrides(**{"redaction.enabled": False}))
    with_cards = [_with_cards(chat, contact) for chat, contact in chats]

    def per_chat_ms(step, sample: list[tuple[dict, dict]]) -> float:
        started = time.process_time()
        for chat, contact in sample:
            step(chat, contact)
        return 1000 * (time.process_time() - started) / len(sample)

    for label, sample in (("as generated", chats), ("a card in every 10th message", with_cards)):
        redact_on, redact_off = per_chat_ms(on.apply, sample), per_chat_ms(off.apply, sample)
        digest = per_chat_ms(source_digest, sample)
        main = per_chat_ms(lambda c, k: source_digest(*_documents(on.apply(c, k))), sample)
        print(f"redaction, default rules, {label}: {redact_on:.3f} ms/chat on, {redact_off:.3f} off; "
              f"main process digest {main:.3f} ms/chat with redaction, {digest:.3f} without")


def signing_cost(keys: dict[str, Path], chats: list[tuple[dict, dict]], work: Path) -> None:
    """Time per chat of what a chat's two signatures cost (the PDF's CMS and the record's .p7s, as
    ArtifactBuilder pays them), with the ECDSA P-256 and an RSA-3072 signing identity, beside the cost
    of one private-key operation with each key: what no code of ours can go below."""
    import cryptography
    from cryptography.hazmat.backends.openssl import backend as openssl_backend
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    sample = chats[:50]
    results = {}
    for label, identity in (("ECDSA P-256", keys), ("RSA-3072", {**keys, **rsa_signing_identity(work / "rsa-cost")})):
        builder = artifacts.ArtifactBuilder.from_config(_config(identity, f"file://{work / 'unused'}", 1))
        at = now()
        builder.plaintext(*sample[0], "ended", 1, at)  # first use: fonts, caches
        per_chat = 0.0
        for chat, contact in sample:
            timings: dict[str, float] = {}
            builder.plaintext(chat, contact, "ended", 1, at, timings)
            per_chat += timings["sign"]
        key = serialization.load_pem_private_key(identity["signing.key.pem"].read_bytes(), None)
        sign = (lambda d: key.sign(d, ec.ECDSA(hashes.SHA256()))) if isinstance(key, ec.EllipticCurvePrivateKey) \
            else (lambda d: key.sign(d, padding.PKCS1v15(), hashes.SHA256()))
        start = time.process_time()
        for i in range(100):
            sign(i.to_bytes(4, "big"))
        one = 1000 * (time.process_time() - start) / 100
        results[label] = (1000 * per_chat / len(sample), one)
    (ec_chat, ec_op), (rsa_chat, rsa_op) = results.values()
    # What signs is the OpenSSL cryptography bundles, not the system's `openssl`: their RSA speeds differ (x2 here).
    print(f"signing with {openssl_backend.openssl_version_text()} (cryptography {cryptography.__version__})")
    print(f"signing per chat (PDF CMS + record .p7s, wall time in one process): ECDSA P-256 {ec_chat:.2f} ms, "
          f"RSA-3072 {rsa_chat:.2f} ms (+{rsa_chat - ec_chat:.2f}); one private-key operation: ECDSA "
          f"{ec_op:.3f} ms, RSA-3072 {rsa_op:.2f} ms, two per chat: RSA's floor over ECDSA "
          f"{2 * (rsa_op - ec_op):.2f} ms")


def _documents(redacted) -> tuple[dict, dict]:
    return redacted.chat, redacted.contact


def _with_cards(chat: dict, contact: dict) -> tuple[dict, dict]:
    chat = {**chat, "messages": [dict(m) for m in chat["messages"]]}
    for message in chat["messages"][::10]:
        data = message["data"] = dict(message["data"])
        content = data["content"] = dict(data["content"])
        content["text"] = f"{content.get('text', '')} my card is 4111 1111 1111 1111"
    return chat, contact


def peak_memory_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of the largest worker process, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def _moto() -> tuple[str, object]:
    from moto.server import ThreadedMotoServer
    import boto3
    import socket

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="bench", ObjectLockEnabledForBucket=True)
    return endpoint, server


def _print_run(label: str, result: dict, bare: float) -> None:
    cpu = result["cpu_ms"]
    stages = result["stages"]
    total = sum(stages.get(s, 0.0) for s in STAGES)
    split = ", ".join(f"{s} {stages.get(s, 0.0):.2f}s ({100 * stages.get(s, 0.0) / total:.0f}%)" for s in STAGES)
    print(f"  {label:5s}: {result['chats_per_s']:7.1f} chats/s, {result['messages_per_s']:9.0f} messages/s, "
          f"pass {result['seconds']:.1f} s, ratio to bare {result['chats_per_s'] / bare:.2f}")
    print(f"         stage time (summed over processes): {split}")
    print(f"         {label} CPU per chat: main {cpu['main']:.2f} ms, workers {cpu['workers']:.2f} ms, "
          f"archiver {cpu['main'] + cpu['workers']:.2f} ms, database {cpu['database']:.2f} ms")
    print(f"         fork server's own CPU so far: {result['fork_server_s']:.2f} s (its start, once per archiver "
          "process: not in the workers' figure)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=0, help="messages per chat (default: random 5-300)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=1, help="runs; median and spread are printed")
    parser.add_argument("--no-s3", action="store_true", help="local store only")
    parser.add_argument("--mongodb-uri", default="", help="a MongoDB server to use")
    parser.add_argument("--db", choices=["nx", "mongomock"], default="nx",
                        help="without --mongodb-uri: nx-27017 in its own process, or mongomock in this one")
    parser.add_argument("--signing-key", choices=["ecdsa", "rsa3072"], default="ecdsa",
                        help="the signing identity: the development ECDSA P-256 one, or an RSA-3072 one")
    parser.add_argument("--signing-cost", action="store_true",
                        help="also time a chat's signatures with ECDSA P-256 and RSA-3072 keys, in this process")
    args = parser.parse_args(argv)
    configure("WARNING", "text")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log

    work = Path(tempfile.mkdtemp(prefix="archiver-bench-"))
    keys = create_development_keys(work / "keys")
    development = dict(keys)  # ECDSA P-256
    if args.signing_key == "rsa3072":
        keys.update(rsa_signing_identity(work / "rsa"))
    chats = generate(args.chats, args.messages or None)
    shape = f"{args.messages} messages" if args.messages else "5-300 messages"
    print(f"{args.chats} chats ({shape}, {sum(len(c['messages']) for c, _ in chats):,} messages), "
          f"{args.workers} worker processes, {os.cpu_count()} cores, signing key {args.signing_key}")
    endpoint, server = (None, None) if args.no_s3 else _moto()
    nx = None
    if not args.mongodb_uri and args.db == "nx":
        (work / "nx").mkdir()
        args.mongodb_uri, nx = start_nx(work / "nx")
    print(f"MongoDB: {args.mongodb_uri or 'mongomock, in this process'}")
    redaction_cost(chats)
    if args.signing_cost:
        signing_cost(development, chats, work)
    rates: dict[str, list[float]] = {"bare": [], "local": [], "s3": []}
    cpus: dict[str, list[float]] = {"bare workers": [], "main": [], "workers": [], "archiver": [], "database": []}
    for run in range(1, args.repeat + 1):
        base = _config(keys, f"file://{work / f'store-{run}'}", args.workers, args.mongodb_uri)
        bare, bare_cpu = bare_rate(base, chats, args.workers)
        rates["bare"].append(bare)
        cpus["bare workers"].append(bare_cpu)
        print(f"run {run}: bare render+sign+encrypt {bare:.1f} chats/s, workers' CPU {bare_cpu:.2f} ms per chat")
        local = end_to_end(base, chats, nx.pid if nx else None)
        rates["local"].append(local["chats_per_s"])
        for name, ms in local["cpu_ms"].items():
            cpus[name].append(ms)
        cpus["archiver"].append(local["cpu_ms"]["main"] + local["cpu_ms"]["workers"])
        _print_run("local", local, bare)
        if endpoint:
            s3_config = _config(keys, f"s3://bench/run-{run}", args.workers, args.mongodb_uri,
                                **{"storage.endpoint_url": endpoint})
            s3 = end_to_end(s3_config, chats, nx.pid if nx else None)
            rates["s3"].append(s3["chats_per_s"])
            _print_run("s3", s3, bare)
    own, worker = peak_memory_mb()
    print(f"peak memory: this process {own:.0f} MB (the archiver's main loop, but also the generated chats and "
          f"moto's objects), largest child {worker:.0f} MB (a worker, or nx-27017); "
          "bench/scaleout.py measures the archiver's processes alone")
    if args.repeat > 1:
        for name, values in rates.items():
            if values:
                print(f"{name:5s}: median {statistics.median(values):.1f} chats/s, "
                      f"spread {min(values):.1f}-{max(values):.1f}")
        for name, values in cpus.items():
            print(f"CPU per chat, {name}: median {statistics.median(values):.2f} ms, "
                  f"spread {min(values):.2f}-{max(values):.2f} ({'bare' if name == 'bare workers' else 'local'})")
        ratios = [l / b for l, b in zip(rates["local"], rates["bare"])]
        print(f"ratio local/bare: median {statistics.median(ratios):.2f}, spread {min(ratios):.2f}-{max(ratios):.2f}")
    if server:
        server.stop()
    if nx:
        nx.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
