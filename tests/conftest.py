"""Shared fixtures: development keys, moto's S3 server over HTTP, MongoDB stand-ins.

MongoDB: mongomock in-process by default; the wire-protocol server nx-27017 for
tests that need several processes; a real server for both when
ARCHIVER_TEST_MONGODB_URI is set (each test gets its own databases).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pymongo
import pytest

from archiver import config as config_module
from archiver.config import Config
from archiver.keys import create_development_keys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from nxserver import free_port, start_nx  # noqa: E402 (the benchmark starts the same server)
from attachment_server import Files, serve  # noqa: E402

REAL_MONGO = os.environ.get("ARCHIVER_TEST_MONGODB_URI", "")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return create_development_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A fresh bucket with versioning and Object Lock, as production would have."""
    name = f"archive-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=name, ObjectLockEnabledForBucket=True
    )
    return name


@pytest.fixture(scope="session")
def nx_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB wire-protocol endpoint shared between processes: nx-27017, or the real server."""
    if REAL_MONGO:
        yield REAL_MONGO
        return
    uri, server = start_nx(tmp_path_factory.mktemp("nx"))
    yield uri
    server.terminate()
    server.wait(10)


@pytest.fixture
def mongo_uri() -> str:
    """Per-test MongoDB: the real server if configured, else a fresh in-process stand-in."""
    return REAL_MONGO or f"mongomock://{uuid.uuid4().hex}"


@pytest.fixture
def db_names(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:10]
    names = {"source.database": f"src_{tag}", "index.database": f"idx_{tag}"}
    yield names
    if REAL_MONGO:
        client = pymongo.MongoClient(REAL_MONGO)
        for name in names.values():
            client.drop_database(name)


@pytest.fixture
def make_config(keys: dict[str, Path], mongo_uri: str, db_names: dict[str, str], tmp_path: Path
                ) -> Callable[..., Config]:
    """A complete configuration for one test; keyword overrides use section__key names."""
    def build(**overrides: Any) -> Config:
        values = {
            "mongodb.uri": mongo_uri,
            "storage.url": f"file://{tmp_path / 'store'}",
            "signing.certificate": str(keys["signing.crt.pem"]),
            "signing.key": str(keys["signing.key.pem"]),
            "encryption.recipients": [str(keys["legal.crt.pem"])],
            "bundle.signing_certificate": str(keys["bundle.crt.pem"]),  # the legal team's, for bundles' manifests
            "bundle.signing_key": str(keys["bundle.key.pem"]),
            "archive.workers": 1,
            "logging.format": "text",
            **db_names,
        }
        values.update({k.replace("__", "."): v for k, v in overrides.items()})
        return config_module.load(None, environ={}).with_overrides(**values)
    return build


def write_toml(path: Path, values: dict[str, Any]) -> Path:
    """Write dotted settings as a TOML file (for tests that drive the CLI)."""
    sections: dict[str, dict[str, Any]] = {}
    for dotted, value in values.items():
        section, key = dotted.split(".")
        sections.setdefault(section, {})[key] = value
    lines = []
    for section, table in sections.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(repr(str(v)).replace(chr(39), chr(34)) for v in value)}]")
            else:
                lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; `make test` installs it (see config/debian-packages.txt)")
    return path


def pdf_pages_and_text(pdf: bytes, folder: Path, name: str, resolution: int = 72) -> tuple[list[bytes], str]:
    """PDF's pages as PNG images (pdftoppm at RESOLUTION dpi) and its text (pdftotext), via FOLDER/NAME.pdf."""
    require_tool("pdftoppm")
    path = folder / f"{name}.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", str(resolution), "-png", str(path), str(folder / name)], check=True)
    pages = [p.read_bytes() for p in sorted(folder.glob(f"{name}-*.png"))]
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True).stdout
    return pages, text


@pytest.fixture(scope="session")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real RFC 3161 timestamp authority over HTTP on 127.0.0.1 (tests/tsa.py); port chosen free."""
    import tsa as tsa_module

    authority, server = tsa_module.start(tmp_path_factory.mktemp("tsa"))
    yield authority
    server.shutdown()
    server.server_close()


@pytest.fixture
def jobs(mongo_uri: str, db_names: dict[str, str]) -> Any:
    """An empty job queue collection (with its indexes) in the index database."""
    from archiver.claims import WorkQueue
    from archiver.mongo import connect

    collection = connect(mongo_uri)[db_names["index.database"]][f"jobs_{uuid.uuid4().hex[:6]}"]
    WorkQueue(collection).ensure_indexes()
    return collection


@pytest.fixture
def files() -> Files:
    """What the local attachment server (`server`) serves, by path."""
    return Files()


@pytest.fixture
def server(files: Files) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving FILES; its base URL."""
    yield from serve(files)
