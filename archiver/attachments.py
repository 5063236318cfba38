"""Attachments: the files IMAGE and DOCUMENT messages link to, fetched once, safely, to be archived.

A URL in a message is hostile input that points our process at the network. So a
fetch goes only to hosts the configuration names (`attachments.hosts`), on the
ports it names (`attachments.ports`), resolves the name itself and refuses any
address that is not public (loopback, private, link-local, multicast, reserved,
cloud metadata; an IPv4 address inside a 6to4, Teredo or NAT64 one likewise)
unless its network is named in `attachments.allowed_networks`, then connects to exactly the address it checked:
a DNS answer that changes between check and connection cannot move it. Redirects
are followed by hand, each hop checked the same way, at most `max_redirects`.
Size is capped while the body streams, time over the whole fetch, and the content
type is read from the bytes (magic numbers), never from the server's headers.

A file that cannot be fetched never stops the archive: it is an `Attachment`
with outcome `refused` (the policy said no: never retried) or `failed` (the
server or the network: retried by later passes within `attachments.retry_hours`).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import encodings.idna
import fnmatch
import hashlib
import http.client
import ipaddress
import json
import posixpath
import re
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, unquote, urljoin, urlsplit

from archiver.config import Config, ConfigError
from archiver.transcript import Message

KINDS = ("IMAGE", "DOCUMENT")  # message types whose URL is the file itself (a LINK is a web page)
FETCHED, REFUSED, FAILED = "fetched", "refused", "failed"
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 64 * 1024
REASON_CHARS = 300  # a failed file's reason, at most (see _plain)
PATH_SAFE = "/%:@!$&'()*+,;=-._~?"  # RFC 3986 characters kept as they are in a path and query
# Cloud instance metadata and host services (AWS, ECS and EKS credentials, Alibaba, Oracle, Azure's
# WireServer): refused even inside an allowed network, and whatever Python's is_global thinks of them.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "100.100.100.200", "192.0.0.192", "168.63.129.16",
    "fd00:ec2::254", "fd00:ec2::23"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix: the IPv4 address in the last 32 bits
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215's local-use prefixes, of 48 to 96 bits
HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")  # LDH labels

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]  # host, port -> IP addresses as text
Connector = Callable[[tuple[str, int], float], socket.socket]  # socket.create_connection's shape


class Refused(Exception):
    """The policy does not allow this fetch (host, address, size, count): not retried."""


class Failed(Exception):
    """The server or the network did not deliver (HTTP error, timeout, reset): retried later."""


@dataclass(frozen=True)
class Policy:
    """The [attachments] section."""
    enabled: bool = False
    hosts: tuple[str, ...] = ()
    allowed_networks: tuple[Network, ...] = ()
    max_bytes: int = 20_000_000
    timeout_seconds: float = 30.0
    max_per_chat: int = 20
    max_bytes_per_chat: int = 100_000_000
    max_redirects: int = 5
    retry_hours: float = 72.0
    max_seconds_per_chat: float = 300.0
    ports: tuple[int, ...] = (80, 443)
    nat64_prefixes: tuple[ipaddress.IPv6Network, ...] = (NAT64,)

    def __post_init__(self) -> None:  # compared in IDNA form with a URL's host, however either is written
        object.__setattr__(self, "hosts", tuple(host_pattern(h) for h in self.hosts))

    @classmethod
    def from_config(cls, config: Config) -> "Policy":
        enabled = config["attachments.enabled"]
        if enabled and not config["attachments.hosts"]:
            raise ConfigError("attachments.hosts: required when attachments.enabled is true "
                              '(the hosts files may be fetched from, e.g. ["media.example.com", "*.cdn.example.net"])')
        seconds, bound = config["attachments.max_seconds_per_chat"], config["archive.build_timeout_seconds"]
        if enabled and seconds > bound / 2:  # fetches run inside the build, which is killed at its bound
            raise ConfigError(f"attachments.max_seconds_per_chat: {seconds:g} is more than half of "
                              f"archive.build_timeout_seconds ({bound}); a chat's fetches must leave the rest of "
                              "its build (rendering, signing, storing) time to finish")
        return cls(enabled, tuple(config["attachments.hosts"]),
                   tuple(parse_networks(config["attachments.allowed_networks"])),
                   config["attachments.max_bytes"], config["attachments.timeout_seconds"],
                   config["attachments.max_per_chat"], config["attachments.max_bytes_per_chat"],
                   config["attachments.max_redirects"], config["attachments.retry_hours"], seconds,
                   tuple(config["attachments.ports"]),
                   tuple(parse_nat64_prefixes(config["attachments.nat64_prefixes"])))


def host_pattern(pattern: str) -> str:
    """PATTERN (an attachments.hosts entry) in IDNA (ASCII) form, lower case, as a URL's host is compared:
    "bücher.example" and "xn--bcher-kva.example" are the same host, written either way."""
    labels = []
    for label in pattern.lower().split("."):
        if label.isascii():
            labels.append(label)
            continue
        try:
            if any(ch in label for ch in "*?["):
                raise UnicodeError("a wildcard inside a non-ASCII label")
            labels.append(encodings.idna.ToASCII(label).decode("ascii"))
        except UnicodeError as exc:
            raise ConfigError(f"attachments.hosts: {pattern!r} has no IDNA (ASCII) form ({exc}); write the host "
                              'name as it is registered, e.g. "bücher.example" or "xn--bcher-kva.example"') from None
    return ".".join(labels)


def parse_networks(values: Iterable[str]) -> list[Network]:
    try:
        return [ipaddress.ip_network(v, strict=False) for v in values]
    except ValueError as exc:
        raise ConfigError(f"attachments.allowed_networks: {exc} (give networks as CIDR, e.g. \"10.20.0.0/16\")") from None


def networks_problem(values: list[str]) -> str | None:
    """The configuration check of attachments.allowed_networks."""
    return _problem(parse_networks, values)


def _problem(parse: Callable[[list[str]], object], values: list[str]) -> str | None:
    """What PARSE finds wrong with VALUES, without the key's name its message starts with (None: nothing)."""
    try:
        parse(values)
    except ConfigError as exc:
        return str(exc).split(": ", 1)[1]
    return None


@dataclass(frozen=True)
class Kept:
    """A file an earlier version stored, as its index entry describes it: copied, not fetched again."""
    version: int  # the version whose object is copied
    key: str
    version_id: str
    sha256: str  # of the stored (encrypted) object
    plaintext_sha256: str
    plaintext_size: int
    content_type: str
    fetched_at: dt.datetime | None
    sealed: bytes = field(default=b"", repr=False)  # the stored object, once read back (by the worker)


@dataclass(frozen=True)
class Attachment:
    """What became of one message's file."""
    position: int  # the message's position in the chat
    message_id: str
    url: str
    file_name: str  # the last segment of the URL's path, for people; never used as a path as it is
    outcome: str  # fetched, refused or failed
    reason: str = ""  # why not fetched: fixed wording, never the URL or what a server sent (the index keeps it)
    data: bytes = field(default=b"", repr=False)
    content_type: str = ""  # sniffed from DATA
    fetched_at: dt.datetime | None = None
    kept: Kept | None = None  # stored by an earlier version, copied from there (DATA is empty)

    @property
    def name(self) -> str:
        """Its object's name in the index entry."""
        return f"attachment-{self.position}"

    @property
    def sha256(self) -> str:
        if self.kept:
            return self.kept.plaintext_sha256
        return hashlib.sha256(self.data).hexdigest() if self.outcome == FETCHED else ""

    @property
    def size(self) -> int:
        return self.kept.plaintext_size if self.kept else len(self.data)

    def describe(self) -> dict[str, Any]:
        """For the JSON record (signed): everything but the bytes."""
        described = {"position": self.position, "message_id": self.message_id, "url": self.url,
                     "file_name": self.file_name, "outcome": self.outcome, "reason": self.reason,
                     "size": self.size if self.outcome == FETCHED else None, "sha256": self.sha256 or None,
                     "content_type": self.content_type or None, "fetched_at": _iso(self.fetched_at),
                     "object": self.name if self.outcome == FETCHED else None}
        if self.kept:
            described["kept_from_version"] = self.kept.version
        return described


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def parse_nat64_prefixes(values: Iterable[str]) -> list[ipaddress.IPv6Network]:
    """attachments.nat64_prefixes: IPv6 /96 networks (RFC 6052's prefixes that keep the IPv4 address in the
    last 32 bits; the shorter ones put it elsewhere), without host bits."""
    prefixes = []
    for value in values:
        try:
            network = ipaddress.ip_network(value)
        except ValueError as exc:
            raise ConfigError(f"attachments.nat64_prefixes: {exc} (give /96 networks, e.g. \"64:ff9b::/96\")") from None
        if network.version != 6 or network.prefixlen != 96:
            what = "not an IPv6 network" if network.version != 6 else "not a /96"
            raise ConfigError(f"attachments.nat64_prefixes: {value!r} is {what} (give the NAT64 gateway's /96 "
                              'prefix, e.g. "64:ff9b::/96" or "2001:db8:64::/96")')
        prefixes.append(network)
    return prefixes


def nat64_problem(values: list[str]) -> str | None:
    """The configuration check of attachments.nat64_prefixes."""
    return _problem(parse_nat64_prefixes, values)


def unlisted_nat64_warning(config: Config) -> str | None:
    """A start-up warning when attachments are fetched and allowed_networks names an IPv6 /96 that
    nat64_prefixes does not: if it is a NAT64 gateway's prefix, its addresses are judged as IPv6 only, so
    every IPv4 address behind the gateway is allowed with them (docs/attachments.md). None if there is none."""
    if not config["attachments.enabled"]:
        return None
    listed = set(parse_nat64_prefixes(config["attachments.nat64_prefixes"]))
    unlisted = [n for n in parse_networks(config["attachments.allowed_networks"])
                if n.version == 6 and n.prefixlen == 96 and n != NAT64 and not n.subnet_of(NAT64_LOCAL)
                and n not in listed]
    if not unlisted:
        return None
    one = len(unlisted) == 1
    return (f"attachments.allowed_networks names {', '.join(repr(str(n)) for n in unlisted)}, "
            f"{'a /96' if one else '/96s'} not in attachments.nat64_prefixes: if {'it is' if one else 'one is'} a "
            "NAT64 gateway's prefix, every IPv4 address behind it (metadata, loopback, private) is allowed too; "
            "list it in attachments.nat64_prefixes as well")


def system_resolve(host: str, port: int) -> list[str]:
    """Every address HOST has, as the system resolver gives them."""
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def forbidden(address: Address, allowed: Iterable[Network] = (),
              nat64: Iterable[ipaddress.IPv6Network] = (NAT64,)) -> str:
    """Why ADDRESS may not be connected to ("" if it may): only public addresses, and those in ALLOWED.
    An address in a NAT64 prefix (NAT64, the well-known one always) is judged by the IPv4 address inside too.
    The kind of address only, never the address: a DNS answer is what a server chose (see Attachment.reason)."""
    allowed, nat64 = tuple(allowed), tuple(nat64)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:  # ::ffff:a.b.c.d reaches a.b.c.d: judged as itself
            return forbidden(address.ipv4_mapped, allowed)
        if address in NAT64_LOCAL and not any(address in n and n.prefixlen >= 96 for n in allowed):
            return "a local-use NAT64 address outside a /96 named in attachments.allowed_networks"
        form, inner = _embedded(address, nat64)
        # A tunnel or a translator reaches INNER: judged as well as the address itself. Loopback there is the
        # relay's or the gateway's own, never ours, whatever allowed_networks names.
        if inner is not None:
            why = "a loopback address" if inner.is_loopback else forbidden(inner, allowed)
            if why:
                return f"a {form} address embedding {why}"
    if address in METADATA:
        return "a cloud metadata address"
    if any(address in network for network in allowed):
        return ""
    for kind in ("unspecified", "loopback", "link_local", "site_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}", False):  # site_local: IPv6 only
            return f"a {kind.replace('_', '-')} address"
    return "" if address.is_global else "not a public address"


def _embedded(address: ipaddress.IPv6Address,
              nat64: tuple[ipaddress.IPv6Network, ...]) -> tuple[str, ipaddress.IPv4Address | None]:
    """The IPv4 address a 6to4 relay, a Teredo server or a NAT64 gateway (its /96 prefix in NAT64, the
    well-known one or a local-use one) reaches for ADDRESS, and which it is. A local-use NAT64 address is read
    as in a /96 prefix: forbidden() allows no other."""
    if address.sixtofour:
        return "6to4", address.sixtofour
    if address.teredo:
        return "Teredo", address.teredo[1]
    if address in NAT64 or address in NAT64_LOCAL or any(address in prefix for prefix in nat64):
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return "", None


def sniff(data: bytes) -> str:
    """The content type the bytes themselves say (magic numbers), never what a server claimed."""
    for magic, offset, kind in SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            if kind == "riff":  # a container: its form type says what is inside
                return RIFF_FORMS.get(data[8:12], "application/octet-stream")
            if kind == "iso-media":  # MP4 and its kin: the major brand says which
                return ISO_BRANDS.get(data[8:12], "video/mp4")
            return kind
    if b"\x00" not in data[:4096]:
        try:
            data[:4096].decode("utf-8")
            return "text/plain"
        except UnicodeDecodeError as exc:
            if exc.start >= 4092:  # a character cut at the end of the sample
                return "text/plain"
    return "application/octet-stream"


SIGNATURES = (  # (magic, offset, type)
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"), (b"\xff\xd8\xff", 0, "image/jpeg"), (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"), (b"%PDF-", 0, "application/pdf"), (b"RIFF", 0, "riff"),
    (b"II*\x00", 0, "image/tiff"), (b"MM\x00*", 0, "image/tiff"), (b"PK\x03\x04", 0, "application/zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "application/x-ole-storage"), (b"\x1f\x8b", 0, "application/gzip"),
    (b"ftyp", 4, "iso-media"), (b"OggS", 0, "audio/ogg"), (b"ID3", 0, "audio/mpeg"),
)
RIFF_FORMS = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
ISO_BRANDS = {b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif", b"msf1": "image/heif",
              b"avif": "image/avif", b"qt  ": "video/quicktime", b"M4A ": "audio/mp4"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "application/pdf": "pdf",
              "image/webp": "webp", "image/tiff": "tif", "application/zip": "zip", "text/plain": "txt"}


class Fetcher:
    """Fetches under a Policy. RESOLVE and CONNECT are the only ways out to the network (tests stub them)."""

    def __init__(self, policy: Policy, resolve: Resolver = system_resolve,
                 connect: Connector = socket.create_connection, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.resolve = resolve
        self.connect = connect
        self.clock = clock
        self.tls = ssl.create_default_context()
        self.connections = 0  # made so far (max_per_chat counts the files that made one)

    def fetch_all(self, messages: Iterable[Message], masked: Callable[[str], bool] = lambda url: False,
                  kept: Mapping[int, Sequence[Kept]] | None = None,
                  read: Callable[[Kept], Kept | None] = lambda file: file) -> list[Attachment]:
        """Each IMAGE and DOCUMENT message's file, within the per-chat caps, in message order. A URL that
        redaction changed (MASKED: a media id that looks like a card number, say) names no file the server
        has: refused, not asked for. KEPT: by position, the copies earlier versions stored of a message's file
        (found by match_keys), newest first; the first that READ gives back (read from the store and checked)
        is copied, not fetched again. Kept files count in the per-chat caps first, in message order (they are
        stored already); one that no longer fits is refused as a fetch over the cap is, and not read."""
        messages = list(messages)
        decided, asked, budget = self._kept_within_caps(messages, kept or {}, read)
        found: list[Attachment] = []
        until = self.clock() + self.policy.max_seconds_per_chat  # the build must finish: see Policy.from_config
        for m in messages:
            if m.type not in KINDS or not m.url:
                continue
            if m.position in decided:
                found.append(decided[m.position])
                continue
            if asked >= self.policy.max_per_chat:
                found.append(_unfetched(m, REFUSED, _over_count(self.policy)))
                continue
            if masked(m.url):
                found.append(_unfetched(m, REFUSED, "its URL was changed by redaction (a part of it looks like "
                                                    "sensitive data): the file is not asked for by another name"))
                continue
            if self.clock() >= until:  # a server problem, not the file's: FAILED, so a later pass retries it
                found.append(_unfetched(m, FAILED, _over_chat_time(self.policy)))
                continue
            connections = self.connections
            attachment = self.attachment(m, budget, until)
            asked += self.connections > connections  # files a server was asked for: what max_per_chat bounds
            budget -= len(attachment.data)
            found.append(attachment)
        return found

    def _kept_within_caps(self, messages: list[Message], kept: Mapping[int, Sequence[Kept]],
                          read: Callable[[Kept], Kept | None]) -> tuple[dict[int, Attachment], int, int]:
        """The kept files that fit in the per-chat caps, in message order (READ only once they fit), and the
        refusals of those that no longer do, by position; then the count and bytes left for fetching. A file
        none of whose copies reads back is in neither: it is fetched."""
        decided: dict[int, Attachment] = {}
        asked, budget = 0, self.policy.max_bytes_per_chat
        for m in messages:
            copies = kept.get(m.position) if m.type in KINDS and m.url else None
            if not copies:
                continue
            limit = min(self.policy.max_bytes, budget)
            if asked >= self.policy.max_per_chat:
                decided[m.position] = _unfetched(m, REFUSED, _over_count(self.policy))
            elif not (fitting := [c for c in copies if c.plaintext_size <= limit]):
                decided[m.position] = _unfetched(m, REFUSED, f"too big: more than {_cap(limit, self.policy)}")
            elif (file := next((f for f in map(read, fitting) if f is not None), None)) is not None:
                decided[m.position] = Attachment(m.position, m.message_id, m.url, file_name(m.url), FETCHED, "",
                                                 content_type=file.content_type, fetched_at=file.fetched_at, kept=file)
                asked += 1
                budget -= file.plaintext_size
        return decided, asked, budget

    def attachment(self, m: Message, budget: int | None = None, until: float | None = None) -> Attachment:
        """M's file, or why not; at most BUDGET bytes (what is left of the per-chat cap), done by UNTIL
        (the per-chat time cap, on self.clock)."""
        budget = self.policy.max_bytes_per_chat if budget is None else budget
        try:
            data = self.fetch(m.url, budget, until)
        except Refused as exc:
            return _unfetched(m, REFUSED, str(exc))
        except Failed as exc:
            return _unfetched(m, FAILED, str(exc))
        except Exception as exc:  # a case not foreseen must cost this file, never the chat
            return _unfetched(m, FAILED, f"an unforeseen error ({type(exc).__name__})")  # its text may quote the URL
        return Attachment(m.position, m.message_id, m.url, file_name(m.url), FETCHED, "", data, sniff(data),
                          dt.datetime.now(dt.timezone.utc))

    def fetch(self, url: str, budget: int | None = None, until: float | None = None) -> bytes:
        """The body at URL (redirects followed, each checked), by UNTIL if given; raises Refused or Failed."""
        limit = min(self.policy.max_bytes, self.policy.max_bytes_per_chat if budget is None else budget)
        deadline = self.clock() + self.policy.timeout_seconds
        capped = until is not None and until < deadline
        deadline = until if capped else deadline
        for hop in range(self.policy.max_redirects + 1):
            try:
                scheme, host, port, path, address = self.check(url, deadline)
            except (Refused, Failed) as exc:
                if hop:  # the URL is the server's choice, not the message's
                    raise type(exc)(f"redirected: {exc}") from None
                raise
            conn = self._connection(scheme, host, port, address, deadline)
            # A socket timeout bounds each wait, not a call that waits many times (a header dripped a byte
            # at a time, interim answers or trailers without end, a slow TLS handshake): at the deadline
            # the connection is shut, whatever http.client is waiting for.
            watchdog = threading.Timer(max(0.0, deadline - self.clock()), _shut, (conn,))
            watchdog.daemon = True
            watchdog.start()
            try:
                response = self._get(conn, path, deadline)
                if response.status in REDIRECTS:
                    location = response.getheader("Location")
                    if not location:
                        raise Failed(f"HTTP {response.status} without a Location")
                    url = self.follow(url, location)
                    continue
                if response.status != 200:
                    raise Failed(f"HTTP {response.status}")  # not the server's reason phrase: its words are not ours
                return self._body(conn, response, limit, deadline)
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, TimeoutError) or self.clock() >= deadline:  # timed out, or shut at the deadline
                    raise Failed(_over_chat_time(self.policy) if capped else
                                 f"timed out (attachments.timeout_seconds = {self.policy.timeout_seconds:g})") from None
                raise Failed(_network_error(exc, self.policy.timeout_seconds)) from None
            finally:
                watchdog.cancel()
                conn.close()
        raise Refused(f"more than {self.policy.max_redirects} redirects (attachments.max_redirects)")

    @staticmethod
    def follow(url: str, location: str) -> str:
        """Where a redirect from URL to LOCATION leads; Refused from https to http (the rest of the fetch,
        the file included, would cross the network in clear)."""
        target = urljoin(url, location)
        if urlsplit(url).scheme.lower() == "https" and urlsplit(target).scheme.lower() != "https":
            raise Refused("a redirect from https to a scheme other than https")
        return target

    def check(self, url: str, deadline: float | None = None) -> tuple[str, str, int, str, str]:
        """(scheme, host, port, path, the address to connect to) of URL, or Refused: nothing is contacted.
        Its reasons quote nothing of the URL (a password, a card number in a host name) nor of a DNS answer."""
        try:
            parts = urlsplit(url)
            port = parts.port if parts.port is not None else 443 if parts.scheme.lower() == "https" else 80
        except ValueError:
            raise Refused("not a usable URL (its host or port cannot be read)") from None
        scheme, name = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
        if scheme not in ("http", "https"):
            raise Refused("not an http or https URL (only those are fetched)")
        if "\\" in parts.netloc:  # read alike by every parser: no backslash, no user information
            raise Refused("not a plain host name (letters, digits, hyphens and dots, or an IP address)")
        if "@" in parts.netloc:
            raise Refused("user information in the URL")
        host = _plain_host(name)  # from here on the ASCII form: matched, resolved, sent and checked by TLS
        if host is None:
            raise Refused("not a plain host name (letters, digits, hyphens and dots, or an IP address)")
        if not host or not any(fnmatch.fnmatchcase(host, pattern) for pattern in self.policy.hosts):
            raise Refused("host not in attachments.hosts")
        if port not in self.policy.ports:  # a URL on an allowed host must not reach its other services
            raise Refused(f"port {port} not in attachments.ports")
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self._resolved(host, port, deadline)]
        except TimeoutError:
            raise Failed("cannot resolve the host (timed out)") from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise Failed(f"cannot resolve the host ({_error_kind(exc)})") from None
        if not addresses:
            raise Failed("the host has no address")
        for address in addresses:  # every one: the connection must not be able to pick a bad one
            why = forbidden(address, self.policy.allowed_networks, self.policy.nat64_prefixes)
            if why:
                raise Refused(f"the host resolves to a forbidden address: {why} (attachments.allowed_networks)")
        # Percent-encoded as sent on the wire: a space, a non-ASCII letter or a stray CR LF stays inside the path.
        path = quote(parts.path or "/", safe=PATH_SAFE) + (f"?{quote(parts.query, safe=PATH_SAFE)}" if parts.query else "")
        return scheme, host, port, path, str(addresses[0])

    def _resolved(self, host: str, port: int, deadline: float | None) -> list[str]:
        """self.resolve(HOST, PORT), waited for until DEADLINE at most: the system resolver has its own
        timeouts, per server and attempt, that no socket timeout bounds (it goes on in its thread, and its
        answer is dropped)."""
        if deadline is None:
            return self.resolve(host, port)
        answer: concurrent.futures.Future = concurrent.futures.Future()

        def resolve() -> None:
            try:
                answer.set_result(self.resolve(host, port))
            except BaseException as exc:  # handed to the waiting fetch
                answer.set_exception(exc)
        threading.Thread(target=resolve, daemon=True).start()
        try:
            return answer.result(timeout=max(0.0, deadline - self.clock()))
        except concurrent.futures.TimeoutError:
            raise TimeoutError() from None

    def _connection(self, scheme: str, host: str, port: int, address: str, deadline: float
                    ) -> http.client.HTTPConnection:
        timeout = max(0.001, deadline - self.clock())
        self.connections += 1
        if scheme == "https":
            return _PinnedHTTPS(host, port, address, self.connect, timeout, self.tls)
        return _PinnedHTTP(host, port, address, self.connect, timeout)

    def _get(self, conn: http.client.HTTPConnection, path: str, deadline: float) -> http.client.HTTPResponse:
        conn.request("GET", path, headers={"User-Agent": "ctlive-archiver", "Accept": "*/*",
                                           "Accept-Encoding": "identity", "Connection": "close"})
        self._remaining(conn, deadline)
        return conn.getresponse()

    def _body(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, limit: int,
              deadline: float) -> bytes:
        declared = response.getheader("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise Refused(f"too big: its declared size is over {_cap(limit, self.policy)}")
        chunks, size = [], 0
        while True:
            self._remaining(conn, deadline)
            chunk = response.read1(CHUNK)  # what has arrived: read() would wait to fill CHUNK
            if not chunk:  # the end, or what looks like it once the watchdog shut the connection
                if response.length != 0 and self.clock() >= deadline:  # 0: all its Content-Length came
                    raise TimeoutError()
                if response.length:  # read1 ends quietly when the server closes early
                    raise Failed("the server closed the connection before the end of the file (its Content-Length)")
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise Refused(f"too big: more than {_cap(limit, self.policy)}")
            chunks.append(chunk)

    def _remaining(self, conn: http.client.HTTPConnection, deadline: float) -> None:
        """Every socket wait is bounded by what is left of the whole fetch's time."""
        left = deadline - self.clock()
        if left <= 0:
            raise TimeoutError()
        if conn.sock is not None:
            conn.sock.settimeout(left)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, whatever the name resolves to now; Host stays the name."""

    def __init__(self, host: str, port: int, address: str, connect: Connector, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address, self.opener = address, connect

    def connect(self) -> None:
        self.sock = self.opener((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, connect: Connector, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address, self.opener, self.tls = address, connect, context

    def connect(self) -> None:
        sock = self.sock = self.opener((self.address, self.port), self.timeout)  # the watchdog can shut it
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)  # the certificate names the host


def _plain_host(host: str) -> str | None:
    """HOST (lower case, as urlsplit gives it) as an IP address or a DNS name of letters, digits and hyphens,
    a non-ASCII name in its IDNA (punycode) form; None if it is neither."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return ascii_host if HOST_NAME.fullmatch(ascii_host) else None


def _shut(conn: http.client.HTTPConnection) -> None:
    """End every wait on CONN's socket (the fetch's deadline came): its reads see the end of the stream."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed meanwhile
            pass


def _unfetched(m: Message, outcome: str, reason: str) -> Attachment:
    return Attachment(m.position, m.message_id, m.url, file_name(m.url), outcome, _plain(reason))


def _plain(reason: str, limit: int = REASON_CHARS) -> str:
    """REASON as the index, record and PDF keep it: control and format characters (a bidi override, an
    escape sequence) written as escapes, and cut at LIMIT characters (a guard: a reason is our own words)."""
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in reason)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _cap(limit: int, policy: Policy) -> str:
    which = "attachments.max_bytes" if limit == policy.max_bytes else "what is left of attachments.max_bytes_per_chat"
    return f"{limit:,} bytes ({which})"


def _over_count(policy: Policy) -> str:
    return f"over attachments.max_per_chat ({policy.max_per_chat})"


def _over_chat_time(policy: Policy) -> str:
    return f"over the per-chat time cap (attachments.max_seconds_per_chat = {policy.max_seconds_per_chat:g})"


def _network_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out (attachments.timeout_seconds = {timeout:g})"
    if isinstance(exc, http.client.HTTPException):  # its text quotes what the server sent
        return f"{type(exc).__name__}: not a usable HTTP answer"
    kind = _error_kind(exc)
    return kind if kind == type(exc).__name__ else f"{type(exc).__name__}: {kind}"


def _error_kind(exc: BaseException) -> str:
    """What went wrong in the library's or the system's fixed words, never EXC's text: that may quote a
    host name (a TLS name mismatch), an address or a server's words."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "a TLS error"  # OpenSSL's reason code, e.g. CERTIFICATE_VERIFY_FAILED
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and isinstance(exc.strerror, str):
        return exc.strerror  # the system's message for its error number (gai_strerror for a DNS error)
    return type(exc).__name__


def file_name(url: str) -> str:
    """The last segment of URL's path, decoded, for people to read ("" if none)."""
    try:
        return posixpath.basename(unquote(urlsplit(url).path))[:200]
    except ValueError:
        return ""


def match_keys(room: str, messages: Iterable[Message]) -> dict[int, str]:
    """By position, the key that finds each file message's file again in a later version of ROOM (the index
    keeps it beside the stored file, whose URL it does not keep): a SHA-256 of the message id and URL, or
    of the position and URL when the id is missing or more than one message of the chat has it (then a
    message inserted before it has its file fetched again, never another message's file kept)."""
    messages = list(messages)
    ids = Counter(m.message_id for m in messages)
    found = {}
    for m in messages:
        if m.type in KINDS and m.url:
            by = ["id", m.message_id] if m.message_id and ids[m.message_id] == 1 else ["position", m.position]
            named = json.dumps(["ctlive attachment", room, *by, m.url], ensure_ascii=False)  # unambiguous
            found[m.position] = hashlib.sha256(named.encode("utf-8", "surrogatepass")).hexdigest()
    return found


def extension(content_type: str) -> str:
    return EXTENSIONS.get(content_type, "bin")
