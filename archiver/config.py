"""Configuration: a TOML file, overridden key by key from the environment.

Every key has a type and a default in SCHEMA; unknown keys and wrong types are
errors that name the key, raised before any work is done.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from pymongo import uri_parser
from pymongo.errors import PyMongoError

from archiver.redact import key_material_refusal, looks_like_key_material, redact, remember_secret, remember_secrets

from archiver.certificates import is_fingerprint

ENV_PREFIX = "ARCHIVER_"


def _templates() -> Path:
    """The bundled templates: inside the package once installed (a wheel maps templates/ to
    archiver/templates), at the top of the source tree when run from a checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


DEFAULT_TEMPLATE = _templates() / "transcript.toml"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class Key:
    type: type
    default: Any
    check: Callable[[Any], str | None] | None = None  # returns a complaint or None
    nested: bool = False  # a table of tables (retention.rules), checked by its own module
    items: type = str  # a list's items: str or int


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(repr, allowed))}"


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _not_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be 0 or more"


# A span of time beyond a century is no setting anyone means, and one added to a date can pass year 9999
# (attachments.retry_hours = inf: an OverflowError as an attachment fails); a wait beyond a day is none an HTTP
# fetch should make.
CENTURY_HOURS = 100 * 366 * 24
DAY_SECONDS = 86400
MAX_SKEW_SECONDS = 365 * DAY_SECONDS  # beyond a year no clock is checked (and from ~1e14 s no timedelta holds it)


def _within(check: Callable[[Any], str | None], limit: float, unit: str) -> Callable[[Any], str | None]:
    return lambda v: check(v) or (None if v <= limit else f"must be at most {limit:.0f} ({unit})")


def _lock_days(v: Any) -> str | None:
    """storage.retain_days: bounded as the policy's periods are (a retain-until past year 9999 fails every chat)."""
    from archiver.policy import MAX_DAYS

    return _not_negative(v) or (f"must be at most {MAX_DAYS} days (a century)" if v > MAX_DAYS else None)


def _storage_url(v: str) -> str | None:
    if v == "" or v.startswith(("s3://", "file://")):
        if v.startswith("s3://") and not v[5:].split("/", 1)[0]:
            return "s3:// URL needs a bucket name, e.g. s3://bucket/prefix"
        return None
    return "must be s3://bucket/prefix or file:///path/to/dir"


def _mongo_uri(v: str) -> str | None:
    if v == "" or v.startswith(("mongodb+srv://", "mongomock://")):  # +srv: checked on connecting (DNS)
        return None
    if not v.startswith("mongodb://"):
        return "must start with mongodb://, mongodb+srv:// or mongomock://"
    try:  # the driver's own parser: host, port, options; no connection is made
        uri_parser.parse_uri(v, warn=False)
    except (PyMongoError, ValueError) as exc:
        return f"is not a valid MongoDB URI ({exc})"
    return None


def _service_url(v: str) -> str | None:
    """An HTTP service's URL (S3 endpoint, timestamp authority): checked here, not by the first chat or request."""
    try:  # (urlsplit drops a newline or tab and reads past a space, which botocore and HTTP clients refuse)
        parts = urlsplit(v)
        fine = (parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
                and not any(c.isspace() or not c.isprintable() for c in v))
    except ValueError:  # a bracketed host that is no IPv6 address, a port that is no number or out of range
        fine = False
    if v and not fine:
        return ("must be an http:// or https:// URL with a host (and a port from 1 to 65535, no spaces), "
                "e.g. https://tsa.example.com/tsr")
    return None


def _database_name(v: str) -> str | None:
    """A name MongoDB accepts for a database (the driver's checks and the server's 64-byte limit): checked here, not
    at the first query."""
    if not v or any(c in '/\\. "$\0' for c in v) or len(v.encode()) >= 64:
        return "must be a MongoDB database name: not empty, under 64 bytes, none of / \\ . \" $ or spaces"
    return None


def _collection_name(v: str) -> str | None:
    """A name MongoDB accepts for a collection (pymongo's checks, and system.*, which MongoDB keeps for itself)."""
    if not v or "$" in v or "\0" in v or ".." in v or v.startswith((".", "system.")) or v.endswith("."):
        return ("must be a MongoDB collection name: not empty, no $, no .., not starting with system. (MongoDB's "
                "own) and not starting or ending with .")
    return None


def _optional_collection_name(v: str) -> str | None:
    return None if v == "" else _collection_name(v)


def _digit_strings(v: list[str]) -> str | None:
    return None if v and all(p.isascii() and p.isdigit() for p in v) else "must be digits, e.g. [\"4\", \"9792\"]"


def _crontab(v: str) -> str | None:
    """A crontab(5) expression as archiver.schedules reads it, that fires at some date; empty disables the job."""
    from archiver.schedules import NeverFires, trigger

    if v == "":
        return None
    try:
        trigger(v)
    except NeverFires as exc:
        return f"{exc} (a day that does not exist in the months given)"
    except ValueError as exc:
        return f"is not a crontab expression ({exc})"
    return None


def _archive_schedule(v: str) -> str | None:
    """The archive pass is what `archiver serve` is for: it cannot be disabled as the other jobs can."""
    return "must be set: the archive pass cannot be disabled (an empty schedule disables the other jobs only)" \
        if v == "" else _crontab(v)


def _fingerprints(v: list[str]) -> str | None:
    if all(is_fingerprint(item) for item in v):
        return None
    return "must be SHA-256 fingerprints, 64 hex digits (colons allowed) as `openssl x509 -fingerprint -sha256` prints"


def _ports(v: list[int]) -> str | None:
    return None if v and all(1 <= p <= 65535 for p in v) else "must be TCP ports, 1 to 65535, e.g. [80, 443]"


def _networks(v: list[str]) -> str | None:
    from archiver.attachments import networks_problem  # it imports this module

    return networks_problem(v)


def _nat64_prefixes(v: list[str]) -> str | None:
    from archiver.attachments import nat64_problem  # it imports this module

    return nat64_problem(v)


SCHEMA: dict[str, dict[str, Key]] = {
    "mongodb": {"uri": Key(str, "", _mongo_uri)},
    "source": {
        "database": Key(str, "ctlive", _database_name),
        "chats": Key(str, "chats", _collection_name),
        "contacts": Key(str, "contacts", _collection_name),
        "messages": Key(str, "", _optional_collection_name),
        "abandoned_after_hours": Key(float, 0.0, _within(_not_negative, CENTURY_HOURS, "a century")),
        "discovery_overlap_minutes": Key(float, 60.0, _within(_not_negative, CENTURY_HOURS * 60, "a century")),
    },
    "index": {
        "uri": Key(str, "", _mongo_uri),
        "database": Key(str, "ctlive_archive", _database_name),
        "entries": Key(str, "archive_index", _collection_name),
        "jobs": Key(str, "archive_jobs", _collection_name),
        "state": Key(str, "archive_state", _collection_name),
        "audit": Key(str, "archive_audit", _collection_name),
        "seals": Key(str, "archive_seals", _collection_name),
        "holds": Key(str, "archive_holds", _collection_name),
        "retention_runs": Key(str, "retention_runs", _collection_name),
        "retention_steps": Key(str, "retention_steps", _collection_name),
    },
    "signing": {
        "certificate": Key(str, ""),
        "key": Key(str, ""),
        "pkcs12": Key(str, ""),
        "key_password": Key(str, ""),
        "chain": Key(list, []),
        "timestamp_url": Key(str, "", _service_url),
        "timestamp_max_skew_seconds": Key(float, 300.0, _within(_positive, MAX_SKEW_SECONDS, "a year")),
        "trust_anchors": Key(list, []),
        "former_certificates": Key(list, []),  # verify pins signatures to these and signing.certificate (pins.py)
        "timestamp_trust_anchors": Key(list, []),
    },
    "encryption": {"recipients": Key(list, []), "recipient_fingerprints": Key(list, [], _fingerprints)},
    "bundle": {  # the legal team's own identity for case bundles' manifests, never signing.* (bundle.py)
        "signing_certificate": Key(str, ""),
        "signing_key": Key(str, ""),
        "signing_pkcs12": Key(str, ""),
        "key_password": Key(str, ""),
    },
    "storage": {
        "url": Key(str, "", _storage_url),
        "endpoint_url": Key(str, "", _service_url),
        "region": Key(str, "us-east-1"),
        "object_lock_mode": Key(str, "COMPLIANCE", _one_of("COMPLIANCE", "GOVERNANCE", "")),
        "retain_days": Key(int, 3650, _lock_days),
        "max_attempts": Key(int, 8, _positive),
    },
    "archive": {
        "workers": Key(int, 0, _not_negative),
        "lease_seconds": Key(int, 300, _positive),
        "build_timeout_seconds": Key(int, 600, _positive),
        "batch_size": Key(int, 32, _positive),
        "max_attempts": Key(int, 5, _positive),
        "retry_backoff_seconds": Key(int, 60, _not_negative),
        "max_message_chars": Key(int, 1_000_000, _positive),
        "max_url_chars": Key(int, 2_048, _positive),
        "max_field_chars": Key(int, 1_000, _positive),
        "max_pages": Key(int, 2_000, _positive),
        "max_pdf_bytes": Key(int, 50_000_000, _positive),
    },
    "render": {
        "template": Key(str, str(DEFAULT_TEMPLATE)),
        "timezone": Key(str, "UTC"),
    },
    "redaction": {  # checked further by archiver.redaction.Redactor.from_config (rule names, RE2 patterns)
        "enabled": Key(bool, True),
        "rules": Key(list, ["card", "cvv", "pin"]),
        "card_show": Key(str, "first6last4", _one_of("first6last4", "last4", "none")),
        "card_prefixes": Key(list, ["2", "3", "4", "5", "6"], _digit_strings),
        "patterns": Key(dict, {}),
        "masks": Key(dict, {}),
    },
    "schedule": {
        "archive": Key(str, "*/5 * * * *", _archive_schedule),
        "discovery_rescan": Key(str, "30 3 * * *", _crontab),
        "seal": Key(str, "30 0 * * *", _crontab),
        "seal_lookback_days": Key(int, 7, _positive),
        "retention": Key(str, "45 4 * * *", _crontab),
    },
    "retention": {
        "rules": Key(dict, {}, nested=True),
        "delete_contacts": Key(bool, False),
    },
    "metrics": {
        "port": Key(int, 9108, lambda v: None if 0 <= v <= 65535 else "must be a TCP port, 0 to 65535 (0: none)"),
        "host": Key(str, "127.0.0.1"),
        "stale_after_minutes": Key(float, 30.0, _within(_positive, CENTURY_HOURS * 60, "a century")),
    },
    "search": {"key_file": Key(str, "")},
    "attachments": {  # checked further by archiver.attachments.Policy.from_config (hosts when enabled)
        "enabled": Key(bool, False),
        "hosts": Key(list, []),
        "allowed_networks": Key(list, [], lambda v: _networks(v)),
        "nat64_prefixes": Key(list, ["64:ff9b::/96"], _nat64_prefixes),
        "max_bytes": Key(int, 20_000_000, _positive),
        "max_bytes_per_chat": Key(int, 100_000_000, _positive),
        "max_per_chat": Key(int, 20, _positive),
        "timeout_seconds": Key(float, 30.0, _within(_positive, DAY_SECONDS, "a day")),
        "max_seconds_per_chat": Key(float, 300.0, _within(_positive, DAY_SECONDS, "a day")),
        "max_redirects": Key(int, 5, _not_negative),
        "retry_hours": Key(float, 72.0, _within(_not_negative, CENTURY_HOURS, "a century")),
        "ports": Key(list, [80, 443], _ports, items=int),
    },
    "logging": {
        "level": Key(str, "INFO", _one_of("DEBUG", "INFO", "WARNING", "ERROR")),
        "format": Key(str, "json", _one_of("json", "text")),
    },
}

FROM_ENVIRONMENT = "the environment"  # Config.source when no file was given
SECRETS = frozenset({"signing.key_password", "bundle.key_password"})  # never echoed in error messages
KEY_FILES = ("signing.key", "signing.pkcs12", "search.key_file", "bundle.signing_key",
             "bundle.signing_pkcs12")  # paths of secret material: what looks like the
# key itself instead is refused unseen, and a value of the wrong type is never echoed
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


SERVICE_URLS = ("storage.endpoint_url", "signing.timestamp_url")  # API keys, codes, signatures as options
SECRET_URIS = ("mongodb.uri", "index.uri", "storage.endpoint_url", "signing.timestamp_url")


class Config:
    """Validated settings, read as ``config["section.key"]``."""

    def __init__(self, values: Mapping[str, Any], source: str) -> None:
        self._values = dict(values)
        self.source = source
        for name in SECRET_URIS:  # hidden from every message from now on, whatever characters they hold
            remember_secrets(str(self._values.get(name) or ""), service=name in SERVICE_URLS)
        for name in SECRETS:
            remember_secret(str(self._values.get(name) or ""))

    def __getitem__(self, dotted: str) -> Any:
        return self._values[dotted]

    def require(self, *dotted: str) -> None:
        """Fail unless every named key has a non-empty value."""
        for name in dotted:
            if self._values[name] in ("", []):
                env = ENV_PREFIX + name.upper().replace(".", "__")
                raise ConfigError(f"{name}: required but not set (in {self.source} or {env}){self._how()}")

    def _how(self) -> str:
        """How to give a configuration file, when none was given."""
        if self.source != FROM_ENVIRONMENT:
            return ""
        return "; no configuration file was given: name one with --config PATH (before the command) or ARCHIVER_CONFIG"

    def with_overrides(self, **dotted: Any) -> "Config":
        """A copy with some keys replaced, e.g. ``{"storage.url": ...}``."""
        merged = {**self._values, **{k.replace("__", "."): v for k, v in dotted.items()}}
        return Config(merged, self.source)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def load(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read PATH (or $ARCHIVER_CONFIG, or nothing) and apply environment overrides."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("ARCHIVER_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except OSError as exc:  # a directory, no permission
            raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    values = _from_file(raw)
    values.update(_from_environment(environ))
    _check_key_files(values)  # before anything can quote them, and before a config file's folder is prefixed
    for name in SERVICE_URLS:  # their API keys hidden in a complaint about them too
        remember_secrets(str(values.get(name) or ""), service=True)
    for dotted, value in values.items():
        section, key = dotted.split(".")
        spec = SCHEMA[section][key]
        problem = ("must be a finite number" if spec.type is float and not math.isfinite(value)
                   else spec.check(value) if spec.check else None)
        if problem:
            raise ConfigError(redact(f"{dotted}: {problem} (got {_shown(dotted, value)})"))
    _check_retention(values)
    if path is not None:
        values = _resolve_paths(values, Path(path).resolve().parent)
    values["render.template"] = values["render.template"] or str(DEFAULT_TEMPLATE)  # empty: the bundled one
    return Config(values, str(path) if path else FROM_ENVIRONMENT)


def _check_key_files(values: dict[str, Any]) -> None:
    for dotted in KEY_FILES:
        refusal = key_material_refusal(dotted, values[dotted])
        if refusal:
            raise ConfigError(f"{refusal}: give the path of the file that holds it")


def _check_retention(values: dict[str, Any]) -> None:
    """The retention policy, checked against the lock settings: a contradiction stops every command."""
    from archiver.policy import PolicyError, parse_policy

    if values["storage.object_lock_mode"] and values["storage.retain_days"] < 1:  # a retain-until already past
        raise ConfigError(f"storage.retain_days: must be at least 1 day with storage.object_lock_mode set (got "
                          f"{values['storage.retain_days']}): a retain-until of the object's own time is past when "
                          "it is stored, and S3 refuses it")
    try:
        parse_policy(values["retention.rules"], values["storage.retain_days"], values["storage.object_lock_mode"])
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None


def _from_file(raw: dict[str, Any]) -> dict[str, Any]:
    values = {f"{s}.{k}": spec.default for s, keys in SCHEMA.items() for k, spec in keys.items()}
    for section, table in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"[{section}]: unknown section (known: {', '.join(SCHEMA)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: must be a table [{section}]")
        for key, value in table.items():
            spec = SCHEMA[section].get(key)
            if spec is None:
                raise ConfigError(f"{section}.{key}: unknown key (known: {', '.join(SCHEMA[section])})")
            values[f"{section}.{key}"] = _typed(f"{section}.{key}", spec, value)
    return values


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == "ARCHIVER_CONFIG":
            continue
        if name.startswith("ARCHIVER_TEST_"):
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        spec = SCHEMA.get(section, {}).get(key)
        if spec is None:
            raise ConfigError(f"{name}: no such setting {section}.{key}")
        values[f"{section}.{key}"] = _parse_env(f"{name} ({section}.{key})", spec, text)
    return values


def _parse_env(name: str, spec: Key, text: str) -> Any:
    """TEXT read as SPEC's type; NAME (the variable and the key it sets) leads any error."""
    if spec.type is dict:  # a table of names to texts, written as a JSON object
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if spec.nested and isinstance(value, dict):
            return value
        if not _is_text_table(value):
            raise ConfigError(f'{name}: must be a JSON object of texts, e.g. {{"name": "value"}} (got {text!r:.80})')
        return value
    if spec.type is list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if spec.items is int:
            if not all(item.isascii() and item.isdigit() for item in items):
                raise ConfigError(f"{name}: must be integers separated by commas, e.g. 80,443 "
                                  f"(got {redact(repr(text))})")
            return [int(item) for item in items]
        return items
    if spec.type is bool:
        if text.lower() not in _BOOL_WORDS:
            raise ConfigError(f"{name}: must be true or false (got {redact(repr(text))})")
        return _BOOL_WORDS[text.lower()]
    try:
        return spec.type(text)
    except ValueError:
        raise ConfigError(f"{name}: must be {spec.type.__name__} (got {redact(repr(text))})") from None


def _typed(dotted: str, spec: Key, value: Any) -> Any:
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if spec.type is list and isinstance(value, list) and all(
            isinstance(v, spec.items) and not isinstance(v, bool) for v in value):
        return value
    if spec.type is dict and (_is_text_table(value) or (spec.nested and isinstance(value, dict))):
        return value
    if isinstance(value, spec.type) and spec.type is not list and not (spec.type is int and isinstance(value, bool)):
        return value
    want = {list: f"list of {'integers' if spec.items is int else 'strings'}", dict: "table of strings"}.get(
        spec.type, spec.type.__name__)
    raise ConfigError(f"{dotted}: must be {want} (got {_shown(dotted, value)})")


def _is_text_table(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _shown(dotted: str, value: Any) -> str:
    texts = value if isinstance(value, list) else [value]  # a certificate's setting given a PEM of it and its key
    withheld = dotted in SECRETS or dotted in KEY_FILES or any(
        isinstance(text, str) and looks_like_key_material(text) for text in texts)
    return f"a {type(value).__name__}, value withheld" if withheld else redact(repr(value))


_PATH_KEYS = ("signing.certificate", "signing.key", "signing.pkcs12", "render.template", "search.key_file",
              "bundle.signing_certificate", "bundle.signing_key", "bundle.signing_pkcs12")


def _resolve_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths in a config file are relative to that file."""
    out = dict(values)
    for key in _PATH_KEYS:
        if out[key]:
            out[key] = str(base / out[key])
    for key in ("signing.chain", "signing.trust_anchors", "signing.former_certificates",
                "signing.timestamp_trust_anchors", "encryption.recipients"):
        out[key] = [str(base / p) for p in out[key]]
    if out["storage.url"].startswith("file://") and not out["storage.url"].startswith("file:///"):
        out["storage.url"] = "file://" + str(base / out["storage.url"][len("file://"):])
    return out
