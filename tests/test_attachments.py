"""Fetching attachments: what is fetched, what is refused and why, and that a refused address is never contacted."""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urlsplit

import pytest

from archiver.attachments import FAILED, FETCHED, REFUSED, Fetcher, Policy, forbidden, sniff
from archiver.transcript import Message
from attachment_server import PDF, jpeg, png

LOCAL = (ipaddress.ip_network("127.0.0.1/32"),)


def policy(*ports: int, **overrides) -> Policy:
    """A policy fetching from 127.0.0.1; PORTS: the test servers' ports (else attachments.ports' default)."""
    values = {"enabled": True, "hosts": ("127.0.0.1",), "allowed_networks": LOCAL, "timeout_seconds": 5.0}
    return Policy(**{**values, **({"ports": ports} if ports else {}), **overrides})


def port(url: str) -> int:
    """The port of a test server's URL (a random one: named in attachments.ports for the test)."""
    return urlsplit(url).port


def message(url: str, position: int = 3, kind: str = "IMAGE") -> Message:
    return Message(position, f"m{position}", "", kind, None, "4747", False, "", url, True, "", None, "")


class Network:
    """A stub resolver and connector: names resolve as told, connections are recorded and refused."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.resolved: list[str] = []
        self.connected: list[tuple[str, int]] = []

    def resolve(self, host: str, port: int) -> list[str]:
        self.resolved.append(host)
        return self.answers[host]

    def connect(self, address: tuple[str, int], timeout: float) -> socket.socket:
        self.connected.append(address)
        raise ConnectionRefusedError("stub: no packet leaves this test")


def test_images_and_documents_are_fetched_with_their_sniffed_type(server, files) -> None:
    image, photo = png(), jpeg()
    files.add("/a/photo.png", image, Content_Type="application/x-evil")  # the header is not believed
    files.add("/a/scan.jpg", photo)
    files.add("/a/contract.pdf", PDF, Content_Type="image/png")
    fetcher = Fetcher(policy(port(server)))
    got = fetcher.fetch_all([message(f"{server}/a/photo.png", 1), message(f"{server}/a/scan.jpg", 2),
                             message(f"{server}/a/contract.pdf", 3, "DOCUMENT"),
                             message(f"{server}/a/page", 4, "LINK")])  # a link is a page, not a file
    assert [(a.position, a.outcome, a.content_type, a.file_name) for a in got] == [
        (1, FETCHED, "image/png", "photo.png"), (2, FETCHED, "image/jpeg", "scan.jpg"),
        (3, FETCHED, "application/pdf", "contract.pdf")]
    assert [a.data for a in got] == [image, photo, PDF]
    assert got[0].fetched_at is not None and got[0].sha256 and got[0].reason == ""


def test_404_is_a_failure_with_its_reason(server) -> None:
    got = Fetcher(policy(port(server))).attachment(message(f"{server}/gone.png"))
    assert (got.outcome, got.reason, got.data) == (FAILED, "HTTP 404", b"")


def test_a_server_that_stalls_times_out(server, files) -> None:
    files.add("/slow.png", png())
    got = Fetcher(policy(port(server), timeout_seconds=0.5)).attachment(message(f"{server}/slow.png"))
    assert got.outcome == FAILED and "timed out" in got.reason


def test_a_body_that_drips_forever_is_cut_by_the_time_cap_of_the_whole_fetch(server, files) -> None:
    files.add("/drip", b"")
    fetcher = Fetcher(policy(port(server), timeout_seconds=0.6))
    started = time.monotonic()
    got = fetcher.attachment(message(f"{server}/drip"))
    assert got.outcome == FAILED and "timed out" in got.reason
    assert time.monotonic() - started < 2.0  # each read alone is quick: only a cap over the whole fetch stops it


def test_oversize_is_refused_whether_declared_or_streamed(server, files) -> None:
    files.add("/big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 5000)
    files.add("/drip", b"")  # no Content-Length: counted while streaming
    fetcher = Fetcher(policy(port(server), max_bytes=1000))
    declared = fetcher.attachment(message(f"{server}/big.png"))
    assert declared.outcome == REFUSED and declared.reason.startswith("too big: its declared size is over 1,000 bytes")
    streamed = Fetcher(policy(port(server), max_bytes=5, timeout_seconds=5)).attachment(message(f"{server}/drip"))
    assert streamed.outcome == REFUSED and streamed.reason.startswith("too big: more than 5 bytes")


def test_per_chat_caps(server, files) -> None:
    for i in range(4):
        files.add(f"/{i}.png", png())
    size = len(png())
    got = Fetcher(policy(port(server), max_per_chat=3, max_bytes_per_chat=2 * size + 10)).fetch_all(
        [message(f"{server}/{i}.png", i + 1) for i in range(4)])
    assert [a.outcome for a in got] == [FETCHED, FETCHED, REFUSED, REFUSED]
    assert "max_bytes_per_chat" in got[2].reason and "max_per_chat" in got[3].reason


def test_files_kept_from_an_earlier_version_are_not_fetched_but_count_in_the_per_chat_caps(server, files) -> None:
    from archiver.attachments import Kept
    size = len(png())
    for i in range(4):
        files.add(f"/{i}.png", png())
    kept = {1: Kept(1, "room/v1/attachment-1-x.png.p7m", "", "c" * 64, "p" * 64, size, "image/png", None)}
    messages = [message(f"{server}/{i}.png", i + 1) for i in range(4)]
    got = Fetcher(policy(port(server), max_per_chat=3)).fetch_all(messages, kept={1: [kept[1]]})
    assert [a.outcome for a in got] == [FETCHED] * 3 + [REFUSED] and "max_per_chat" in got[3].reason
    assert got[0].kept is kept[1] and (got[0].sha256, got[0].size, got[0].data) == ("p" * 64, size, b"")
    assert files.requests == ["/1.png", "/2.png"]  # the kept file was not asked for
    by_bytes = Fetcher(policy(port(server), max_bytes_per_chat=2 * size + 10)).fetch_all(messages, kept={1: [kept[1]]})
    assert [a.outcome for a in by_bytes] == [FETCHED, FETCHED, REFUSED, REFUSED]


def test_a_host_not_allowed_is_refused_without_resolving_it() -> None:
    net = Network({})
    got = Fetcher(policy(hosts=("media.example.com",)), net.resolve, net.connect).attachment(
        message("https://evil.example.org/x.png"))
    assert (got.outcome, got.reason) == (REFUSED, "host not in attachments.hosts")  # the host not quoted
    assert net.resolved == [] and net.connected == []


@pytest.mark.parametrize("address, why", [
    ("10.1.2.3", "private"), ("192.168.0.10", "private"), ("127.0.0.1", "loopback"),
    ("169.254.169.254", "metadata"), ("169.254.10.1", "link-local"), ("::1", "loopback"),
    ("::ffff:169.254.169.254", "metadata"), ("::ffff:10.0.0.1", "private"), ("fe80::1", "link-local"),
    ("fd00:ec2::254", "metadata"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "not a public"), ("2002:a00:1::", "embedding a private"),
    # metadata and host services that Python 3.11's is_global calls public, or that sit in networks allowed
    ("192.0.0.192", "metadata"), ("168.63.129.16", "metadata"), ("169.254.170.23", "metadata"),
    ("fd00:ec2::23", "metadata"), ("fec0::1", "site-local"),
])
def test_forbidden_addresses_are_refused_before_any_connection(address, why) -> None:
    net = Network({"media.example.com": [address]})
    fetcher = Fetcher(policy(hosts=("media.example.com",), allowed_networks=()), net.resolve, net.connect)
    got = fetcher.attachment(message("https://media.example.com/x.png"))
    assert got.outcome == REFUSED and "forbidden address" in got.reason and why in got.reason
    assert net.resolved == ["media.example.com"] and net.connected == []


def test_one_bad_address_among_several_refuses_the_host() -> None:
    net = Network({"media.example.com": ["93.184.216.34", "10.0.0.7"]})
    got = Fetcher(policy(hosts=("media.example.com",), allowed_networks=()), net.resolve, net.connect).attachment(
        message("http://media.example.com/x.png"))
    assert got.outcome == REFUSED and "a private address" in got.reason and net.connected == []
    assert "10.0.0.7" not in got.reason  # a DNS answer, not quoted


def test_the_checked_address_is_the_one_connected_to() -> None:
    net = Network({"media.example.com": ["93.184.216.34"]})
    got = Fetcher(policy(hosts=("media.example.com",), allowed_networks=()), net.resolve, net.connect).attachment(
        message("http://media.example.com/x.png"))
    assert got.outcome == FAILED and net.connected == [("93.184.216.34", 80)]  # the stub refused it


def test_metadata_stays_refused_inside_an_allowed_network() -> None:
    assert "metadata" in forbidden(ipaddress.ip_address("169.254.169.254"), [ipaddress.ip_network("169.254.0.0/16")])
    assert forbidden(ipaddress.ip_address("10.20.1.1"), [ipaddress.ip_network("10.20.0.0/16")]) == ""
    assert forbidden(ipaddress.ip_address("93.184.216.34")) == ""


def test_a_redirect_to_a_forbidden_address_is_refused_before_connecting_there(server, files) -> None:
    files.add("/r.png", b"", status=302, Location="http://metadata.example.com/latest/meta-data/")
    real = socket.create_connection
    net = Network({"127.0.0.1": ["127.0.0.1"], "metadata.example.com": ["169.254.169.254"]})

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        net.connected.append(address)
        assert address[0] == "127.0.0.1", f"tried to connect to {address}"
        return real(address, timeout)

    fetcher = Fetcher(policy(port(server), 80, hosts=("127.0.0.1", "metadata.example.com")), net.resolve, connect)
    got = fetcher.attachment(message(f"{server}/r.png"))
    assert (got.outcome, got.reason) == (REFUSED, ("redirected: the host resolves to a forbidden address: a cloud "
                                                  "metadata address (attachments.allowed_networks)"))
    assert net.resolved == ["127.0.0.1", "metadata.example.com"]
    assert [a for a, _ in net.connected] == ["127.0.0.1"]


def test_redirects_are_followed_and_bounded(server, files) -> None:
    files.add("/final.png", png())
    files.add("/hop.png", b"", status=301, Location="/final.png")
    files.add("/loop", b"", status=302, Location="/loop")
    fetcher = Fetcher(policy(port(server), max_redirects=2))
    assert fetcher.attachment(message(f"{server}/hop.png")).data == png()
    looped = fetcher.attachment(message(f"{server}/loop"))
    assert looped.outcome == REFUSED and "more than 2 redirects" in looped.reason


def test_schemes_other_than_http_are_refused() -> None:
    net = Network({})
    fetcher = Fetcher(policy(hosts=("*",)), net.resolve, net.connect)
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:6379/_INFO"):
        got = fetcher.attachment(message(url))
        assert got.outcome == REFUSED and "not an http or https URL" in got.reason
    assert net.resolved == [] and net.connected == []


def test_sniffing_reads_the_bytes() -> None:
    assert sniff(png()) == "image/png" and sniff(jpeg()) == "image/jpeg" and sniff(PDF) == "application/pdf"
    assert sniff(b"GIF89a...") == "image/gif" and sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff("ciao è".encode()) == "text/plain" and sniff(b"\x00\x01\x02\xff") == "application/octet-stream"
    # containers say what is inside: a RIFF's form type, an ISO media file's brand (an iPhone photo is HEIC)
    assert sniff(b"RIFF\0\0\0\0WAVEfmt ") == "audio/wav" and sniff(b"RIFF\0\0\0\0AVI LIST") == "video/x-msvideo"
    assert sniff(b"RIFF\0\0\0\0XXXX") == "application/octet-stream"
    assert sniff(b"\0\0\0\x18ftypheic\0\0\0\0") == "image/heic" and sniff(b"\0\0\0\x18ftypavif") == "image/avif"
    assert sniff(b"\0\0\0\x18ftypisom\0\0\0\0") == "video/mp4" and sniff(b"\0\0\0\x18ftypqt  ") == "video/quicktime"


def test_spaces_non_ascii_and_line_breaks_stay_inside_the_path(server, files) -> None:
    files.add("/m/foto%20%C3%A8.png", png())
    fetcher = Fetcher(policy(port(server)))
    assert fetcher.attachment(message(f"{server}/m/foto è.png")).data == png()
    injected = fetcher.attachment(message(f"{server}/m/x.png\r\nX-Injected: 1"))
    # urlsplit drops CR, LF and tab (as WHATWG URL parsing does): one request line, no header added
    assert injected.outcome == FAILED and files.requests[-1] == "/m/x.pngX-Injected:%201"


def test_an_unforeseen_error_costs_the_file_not_the_chat() -> None:
    def broken(host: str, port: int) -> list[str]:
        raise RuntimeError("resolver bug")

    got = Fetcher(policy(hosts=("*",)), broken).attachment(message("http://media.example.com/x.png"))
    assert got.outcome == FAILED and got.reason == "an unforeseen error (RuntimeError)"


def test_configuration_is_checked_before_any_work(make_config) -> None:
    from archiver import config as config_module
    from archiver.config import ConfigError

    with pytest.raises(ConfigError, match="attachments.hosts: required when attachments.enabled"):
        Policy.from_config(make_config(attachments__enabled=True))
    with pytest.raises(ConfigError, match="attachments.allowed_networks"):
        config_module.load(None, environ={"ARCHIVER_ATTACHMENTS__ALLOWED_NETWORKS": "10.0.0.0/8,not-a-network"})
    loaded = Policy.from_config(make_config(attachments__enabled=True, attachments__hosts=["Media.Example.com"],
                                            attachments__allowed_networks=["10.20.0.0/16"]))
    assert loaded.hosts == ("media.example.com",) and loaded.allowed_networks == (ipaddress.ip_network("10.20.0.0/16"),)
    assert Policy.from_config(make_config()).enabled is False  # off by default


def test_the_per_chat_fetch_time_must_leave_the_build_time_to_finish(make_config, tmp_path, capsys) -> None:
    from archiver.cli import main
    from archiver.config import ConfigError
    from conftest import write_toml

    over = {"attachments__enabled": True, "attachments__hosts": ["media.example.com"],
            "archive__build_timeout_seconds": 600, "attachments__max_seconds_per_chat": 301.0}
    with pytest.raises(ConfigError, match=r"attachments.max_seconds_per_chat: 301 is more than half of "
                                          r"archive.build_timeout_seconds \(600\)"):
        Policy.from_config(make_config(**over))
    assert Policy.from_config(make_config(**{**over, "attachments__max_seconds_per_chat": 300.0})).enabled
    assert not Policy.from_config(make_config(**{**over, "attachments__enabled": False})).enabled  # off: no matter
    config = make_config(**over)
    toml = write_toml(tmp_path / "c.toml", {k: config[k] for k in (
        "mongodb.uri", "index.database", "source.database", "storage.url", "encryption.recipients",
        "signing.certificate", "signing.key", "attachments.enabled", "attachments.hosts",
        "attachments.max_seconds_per_chat")})
    assert main(["--config", str(toml), "run"]) == 2  # at start-up, before any work
    assert "attachments.max_seconds_per_chat" in capsys.readouterr().err


class RawServer:
    """A server on 127.0.0.1 that answers one request with SCRIPT: (bytes, seconds to wait after) pairs,
    repeated until the client goes away or STOP_AFTER seconds pass, then closes."""

    def __init__(self, head: bytes, repeated: bytes = b"", every: float = 0.0, stop_after: float = 15.0) -> None:
        import threading
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.head, self.repeated, self.every, self.stop_after = head, repeated, every, stop_after
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)  # the request
            try:
                conn.sendall(self.head)
                ends = time.monotonic() + self.stop_after
                while self.repeated and time.monotonic() < ends:
                    conn.sendall(self.repeated)
                    time.sleep(self.every)
            except OSError:  # the client gave up: what the test wants
                pass
        self.listener.close()


@pytest.mark.parametrize("head, repeated, every", [
    (b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", 0.2),  # a header dripped a byte at a time
    (b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.02),  # interim answers without end (http.client skips them)
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n", b"X-Trailer: y\r\n", 0.02),  # trailers
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"0", 0.2),  # a chunk-size line dripped
], ids=["dripped header", "100 Continue flood", "endless trailers", "dripped chunk size"])
def test_the_fetch_time_bounds_every_wait_of_a_fetch_not_each_read(head, repeated, every) -> None:
    """attachments.timeout_seconds is the time of the whole fetch: a server that keeps each read short but
    never finishes (headers, interim answers, trailers, chunk sizes) is cut when it is up."""
    server = RawServer(head, repeated, every)
    fetcher = Fetcher(policy(server.port, timeout_seconds=1.0))
    started = time.monotonic()
    got = fetcher.attachment(message(f"http://127.0.0.1:{server.port}/slow.png"))
    assert time.monotonic() - started < 2.5, "not bounded by attachments.timeout_seconds"
    assert (got.outcome, got.reason) == (FAILED, "timed out (attachments.timeout_seconds = 1)"), got
    assert got.data == b""


def test_a_body_cut_short_of_its_content_length_is_a_failure_not_a_file() -> None:
    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 10)
    got = Fetcher(policy(server.port)).attachment(message(f"http://127.0.0.1:{server.port}/cut.png"))
    assert (got.outcome, got.data) == (FAILED, b""), got
    assert got.reason == "the server closed the connection before the end of the file (its Content-Length)", got


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 404 4111 1111 1111 1111 \xe2\x80\xae" + b"z" * 5000 + b"\r\nContent-Length: 0\r\n\r\n",  # a reason phrase
    b"HTTP/1.1 4111111111111111 \x1b[31m" + b"z" * 5000 + b"\r\n\r\n",  # a status line http.client quotes back
], ids=["reason phrase", "bad status line"])
def test_what_a_server_says_reaches_the_reason_only_short_and_as_plain_text(answer) -> None:
    """The reason of a failed file is kept in the index, the record and the PDF: the server's own words are
    left out or cut short and written with escapes, never raw control or bidi characters."""
    server = RawServer(answer)
    got = Fetcher(policy(server.port)).attachment(message(f"http://127.0.0.1:{server.port}/x.png"))
    assert got.outcome == FAILED and len(got.reason) <= 300, got.reason
    assert not any(ch in got.reason for ch in "\x1b\u202e\r\n"), got.reason
    assert "4111 1111 1111 1111" not in got.reason, "the server's words are not needed to say what failed"


def test_metadata_of_every_cloud_stays_refused_inside_an_allowed_network() -> None:
    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    for address in ("169.254.169.254", "169.254.170.2", "169.254.170.23", "100.100.100.200", "192.0.0.192",
                    "168.63.129.16", "fd00:ec2::254", "fd00:ec2::23"):
        assert "metadata" in forbidden(ipaddress.ip_address(address), everything), address


@pytest.mark.parametrize("url", [
    "http://evil.example.org\\@media.example.com/x.png",  # a browser reads the host as evil.example.org
    "http://media.example.com\\.evil.example.org/x.png",
    "http://media_example.com/x.png",
])
def test_a_host_that_is_not_a_plain_dns_name_is_refused_without_resolving_it(url) -> None:
    net = Network({})
    got = Fetcher(policy(hosts=("*",)), net.resolve, net.connect).attachment(message(url))
    assert got.outcome == REFUSED and "not a plain host name" in got.reason, got
    assert net.resolved == [] and net.connected == []


def test_a_redirect_from_https_to_http_is_refused() -> None:
    fetcher = Fetcher(policy())
    with pytest.raises(Exception) as caught:
        fetcher.follow("https://127.0.0.1/a.png", "http://127.0.0.1/b.png")
    assert str(caught.value) == "a redirect from https to a scheme other than https"
    assert fetcher.follow("http://127.0.0.1/a.png", "https://127.0.0.1/b.png") == "https://127.0.0.1/b.png"
    assert fetcher.follow("https://127.0.0.1/a/x.png", "../b.png") == "https://127.0.0.1/b.png"


def test_files_refused_without_asking_a_server_do_not_use_up_the_per_chat_count(server, files) -> None:
    """max_per_chat bounds what is asked of servers: junk links refused on their own (a host not allowed)
    cost nothing, so they cannot crowd out the real files after them."""
    for i in range(2):
        files.add(f"/{i}.png", png())
    junk = [message(f"https://elsewhere.example.org/{i}.png", i + 1) for i in range(3)]
    real = [message(f"{server}/{i}.png", 4 + i) for i in range(2)]
    got = Fetcher(policy(port(server), max_per_chat=2)).fetch_all([*junk, *real])
    assert [a.outcome for a in got] == [REFUSED] * 3 + [FETCHED] * 2


def test_a_resolver_that_hangs_is_bounded_by_the_fetch_time_and_port_0_is_refused() -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["93.184.216.34"]
    net = Network({})
    fetcher = Fetcher(policy(hosts=("media.example.com",), timeout_seconds=0.5), slow, net.connect)
    started = time.monotonic()
    got = fetcher.attachment(message("https://media.example.com/x.png"))
    assert time.monotonic() - started < 1.5 and net.connected == []
    assert (got.outcome, got.reason) == (FAILED, "cannot resolve the host (timed out)"), got
    refused = Fetcher(policy(hosts=("127.0.0.1",)), net.resolve, net.connect).attachment(
        message("http://127.0.0.1:0/x.png"))
    assert refused.outcome == REFUSED and "port 0" in refused.reason and net.connected == []


@pytest.mark.parametrize("url, reason", [
    ("https://alice:S3cretPassw0rd@127.0.0.1/statement.pdf", "user information in the URL"),
    ("https://4111111111111111@127.0.0.1/x.png", "user information in the URL"),
    ("http://127.0.0.1:4111111111111111/x.png", "not a usable URL (its host or port cannot be read)"),
    ("a4111111111111111://127.0.0.1/x.png", "not an http or https URL (only those are fetched)"),
    ("https://4111-1111-1111-1111.evil.example/x.png", "host not in attachments.hosts"),
])
def test_a_reason_is_fixed_wording_that_quotes_nothing_of_the_url(url, reason) -> None:
    """The index keeps each reason unencrypted, and past an erasure: a password or a card number written
    into a URL must not reach it (the encrypted record keeps the URL itself)."""
    net = Network({})
    got = Fetcher(policy(hosts=("127.0.0.1", "media.example.com")), net.resolve, net.connect).attachment(message(url))
    assert (got.outcome, got.reason) == (REFUSED, reason)
    assert net.resolved == [] and net.connected == []


@pytest.mark.parametrize("answer, outcome, reason", [
    ({}, REFUSED, "redirected: host not in attachments.hosts"),
    ({"4111-1111-1111-1111.cdn.example": ["10.41.11.11"]}, REFUSED,
     "redirected: the host resolves to a forbidden address: a private address (attachments.allowed_networks)"),
    ({"4111-1111-1111-1111.cdn.example": ["2002:a29:b0b::1"]}, REFUSED,
     ("redirected: the host resolves to a forbidden address: a 6to4 address embedding a private address "
      "(attachments.allowed_networks)")),
    ({"4111-1111-1111-1111.cdn.example": []}, FAILED, "redirected: the host has no address"),
    (None, FAILED, "redirected: cannot resolve the host (Name or service not known)"),
])
def test_a_host_a_server_redirects_to_is_never_quoted_nor_its_addresses(server, files, answer, outcome,
                                                                        reason) -> None:
    """A redirect's host is the server's choice (it may spell a card number), and so are the addresses its
    name resolves to: the reason says what was wrong with them in fixed words. Resolver and connector are
    stubbed: only the test server on 127.0.0.1 is contacted."""
    files.add("/r.png", b"", status=302, Location="http://4111-1111-1111-1111.cdn.example/x.png")
    hosts = ("127.0.0.1",) + (("*.cdn.example",) if answer != {} else ())
    resolved: list[str] = []
    real = socket.create_connection

    def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        if host == "127.0.0.1":
            return ["127.0.0.1"]
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answer[host]

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        assert address[0] == "127.0.0.1", f"tried to connect to {address}"
        return real(address, timeout)

    got = Fetcher(policy(port(server), 80, hosts=hosts), resolve, connect).attachment(message(f"{server}/r.png"))
    assert (got.outcome, got.reason) == (outcome, reason)
    assert resolved == ["127.0.0.1"] + (["4111-1111-1111-1111.cdn.example"] if answer != {} else [])
    assert files.requests == ["/r.png"]


@pytest.mark.parametrize("pattern, url", [
    ("xn--bcher-kva.example", "https://bücher.example/x.png"),  # configured in IDNA form, linked in Unicode
    ("bücher.example", "https://xn--bcher-kva.example/x.png"),  # and the other way round
    ("BÜCHER.example", "https://Bücher.example/x.png"),
    ("*.bücher.example", "https://media.xn--bcher-kva.example/x.png"),
])
def test_a_host_matches_its_pattern_in_either_idn_form(make_config, pattern, url) -> None:
    """attachments.hosts and the URL's host are compared in IDNA (ASCII) form: the same host written the
    other way is the same host, fetched, not refused for good. The stub refuses the connection."""
    host = urlsplit(url).hostname.encode("idna").decode("ascii")
    net = Network({host: ["93.184.216.34"]})
    loaded = Policy.from_config(make_config(attachments__enabled=True, attachments__hosts=[pattern]))
    got = Fetcher(loaded, net.resolve, net.connect).attachment(message(url))
    assert got.outcome == FAILED and "Connection" in got.reason, got  # past the policy, to the (stub) connection
    assert net.resolved == [host] and net.connected == [("93.184.216.34", 443)]
    other = Fetcher(loaded, net.resolve, net.connect).attachment(message("https://bucher.example/x.png"))
    assert (other.outcome, other.reason) == (REFUSED, "host not in attachments.hosts")  # not the same host
    assert net.resolved == [host]


@pytest.mark.parametrize("pattern", ["*ü.example", "ü" * 70 + ".example", "bü\u200e.example"])
def test_a_host_pattern_with_no_idna_form_is_a_configuration_error(make_config, pattern) -> None:
    from archiver.config import ConfigError

    with pytest.raises(ConfigError, match=r"attachments\.hosts: .* has no IDNA \(ASCII\) form"):
        Policy.from_config(make_config(attachments__enabled=True, attachments__hosts=["media.example.com", pattern]))


def test_a_tls_error_is_named_by_its_kind_not_by_its_text_that_quotes_the_host(tmp_path) -> None:
    """A certificate that does not name the host fails the fetch; OpenSSL's message quotes the host name
    (here one that spells a card number), so the reason gives its reason code only. The name resolves (stub)
    to a TLS server on 127.0.0.1 whose certificate, issued by a CA the fetcher trusts, names another host."""
    import ssl
    import threading
    from certfactory import make

    ca = make(tmp_path, "Test CA", usages=("key_cert_sign", "crl_sign"), ca=True)
    leaf = make(tmp_path, "media.example", usages=("digital_signature", "key_encipherment"), issuer=ca)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(leaf.cert_path, leaf.key_path)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            served.wrap_socket(conn, server_side=True).close()
        except (OSError, ssl.SSLError):  # the client gives up on the certificate: what the test wants
            conn.close()
        listener.close()
    threading.Thread(target=serve, daemon=True).start()

    host = "4111-1111-1111-1111.cdn.example"
    net = Network({host: ["127.0.0.1"]})
    real = socket.create_connection

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        net.connected.append(address)
        assert address[0] == "127.0.0.1", f"tried to connect to {address}"
        return real(address, timeout)

    fetcher = Fetcher(policy(listener.getsockname()[1], hosts=("*.cdn.example",)), net.resolve, connect)
    fetcher.tls = ssl.create_default_context(cafile=str(ca.cert_path))
    got = fetcher.attachment(message(f"https://{host}:{listener.getsockname()[1]}/x.png"))
    assert (got.outcome, got.reason) == (FAILED, "SSLCertVerificationError: CERTIFICATE_VERIFY_FAILED"), got
    assert net.resolved == [host] and [a for a, _ in net.connected] == ["127.0.0.1"]


def nat64(prefix: str, inside: str) -> str:
    """IPv4 address INSIDE in the /96 PREFIX of a NAT64 gateway (RFC 6052: the last 32 bits)."""
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix)) + int(ipaddress.IPv4Address(inside))))


@pytest.mark.parametrize("inside, why", [
    ("10.0.0.5", "a private address"), ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a cloud metadata address"), ("127.0.0.1", "a loopback address"),
    ("169.254.10.1", "a link-local address"),
])
@pytest.mark.parametrize("prefix", ["64:ff9b::", "64:ff9b:1:a::"], ids=["well-known", "local-use"])
def test_nat64_addresses_are_judged_by_the_ipv4_address_inside(prefix, inside, why) -> None:
    """On an IPv6-only host behind DNS64/NAT64 every IPv4 host resolves to the gateway's prefix, which the
    operator names in allowed_networks: the IPv4 address the gateway reaches is still judged. Stubbed network."""
    gateway = ipaddress.ip_network(f"{prefix}/96")
    net = Network({"media.example.com": [nat64(prefix, inside)]})
    fetcher = Fetcher(policy(hosts=("media.example.com",), allowed_networks=(gateway,)), net.resolve, net.connect)
    got = fetcher.attachment(message("https://media.example.com/photo.png"))
    assert (got.outcome, got.reason) == (REFUSED, f"the host resolves to a forbidden address: a NAT64 address "
                                                  f"embedding {why} (attachments.allowed_networks)")
    assert net.connected == []
    public = Network({"media.example.com": [nat64(prefix, "93.184.216.34")]})
    fetched = Fetcher(policy(hosts=("media.example.com",), allowed_networks=(gateway,)), public.resolve,
                      public.connect).attachment(message("https://media.example.com/photo.png"))
    assert fetched.outcome == FAILED and public.connected == [(nat64(prefix, "93.184.216.34"), 443)]  # the stub


def test_an_embedded_address_is_allowed_by_its_own_network_but_never_loopback_or_metadata() -> None:
    """As for 6to4 and Teredo: the IPv4 address inside a NAT64 address passes if its network is allowed
    (an internal media server reached through the gateway), but loopback (the gateway's or relay's own,
    never ours) and metadata inside are refused whatever allowed_networks says."""
    everything = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("2002::/16"),
                  ipaddress.ip_network("0.0.0.0/0")]
    assert forbidden(ipaddress.ip_address(nat64("64:ff9b::", "10.20.0.7")), everything) == ""
    assert forbidden(ipaddress.ip_address(nat64("64:ff9b::", "10.20.0.7")), everything[2:]) == "a reserved address"
    assert forbidden(ipaddress.ip_address(nat64("64:ff9b::", "10.20.0.7")), everything[:2]) == \
        "a NAT64 address embedding a private address"  # the address inside and the prefix must both pass
    for inside in ("127.0.0.1", "169.254.169.254", "100.100.100.200"):
        why = forbidden(ipaddress.ip_address(nat64("64:ff9b::", inside)), everything)
        assert why.startswith("a NAT64 address embedding") and ("loopback" in why or "metadata" in why), why
    sixtofour = ipaddress.IPv4Address("127.0.0.1").packed.hex()
    why = forbidden(ipaddress.ip_address(f"2002:{sixtofour[:4]}:{sixtofour[4:]}::1"), everything)
    assert why == "a 6to4 address embedding a loopback address", why
    assert forbidden(ipaddress.ip_address("::ffff:127.0.0.1"), everything) == ""  # mapped: our own loopback, as itself


def test_a_local_use_nat64_address_is_refused_unless_a_96_of_it_is_allowed() -> None:
    """RFC 8215's local-use prefix 64:ff9b:1::/48 may hold a gateway prefix of 48 to 96 bits, each of which
    embeds the IPv4 address elsewhere (RFC 6052): it is read only inside a /96 named in allowed_networks."""
    address = ipaddress.ip_address(nat64("64:ff9b:1::", "93.184.216.34"))
    why = forbidden(address, [ipaddress.ip_network("64:ff9b:1::/48")])
    assert why == "a local-use NAT64 address outside a /96 named in attachments.allowed_networks", why
    assert forbidden(address, [ipaddress.ip_network("64:ff9b:1::/96")]) == ""
    assert forbidden(address) != ""  # not allowed at all: reserved


NETWORK_SPECIFIC = ipaddress.ip_network("2001:db8:64::/96")  # a NAT64 gateway's own prefix (RFC 6052 2.2)


@pytest.mark.parametrize("inside, why", [
    ("169.254.169.254", "a cloud metadata address"), ("127.0.0.1", "a loopback address"),
    ("10.0.0.5", "a private address"),
])
def test_a_nat64_prefix_named_in_nat64_prefixes_is_judged_by_the_ipv4_address_inside(inside, why) -> None:
    """A gateway with a network-specific prefix, named in nat64_prefixes and (to be reached at all) in
    allowed_networks: the IPv4 address it reaches is judged, as behind 64:ff9b::/96. Stubbed network."""
    named = {"hosts": ("media.example.com",), "allowed_networks": (NETWORK_SPECIFIC,),
             "nat64_prefixes": (NETWORK_SPECIFIC,)}
    net = Network({"media.example.com": [nat64("2001:db8:64::", inside)]})
    got = Fetcher(policy(**named), net.resolve, net.connect).attachment(message("https://media.example.com/a.png"))
    assert (got.outcome, got.reason) == (REFUSED, f"the host resolves to a forbidden address: a NAT64 address "
                                                  f"embedding {why} (attachments.allowed_networks)")
    assert net.resolved == ["media.example.com"] and net.connected == []
    public = Network({"media.example.com": [nat64("2001:db8:64::", "93.184.216.34")]})
    fetched = Fetcher(policy(**named), public.resolve, public.connect).attachment(
        message("https://media.example.com/a.png"))
    assert fetched.outcome == FAILED and public.connected == [(nat64("2001:db8:64::", "93.184.216.34"), 443)]


def test_the_well_known_nat64_prefix_is_judged_whatever_nat64_prefixes_lists() -> None:
    """The default lists 64:ff9b::/96; a list naming only the gateway's own prefix does not open it, and an
    address outside every listed prefix is judged as itself (the gateway's prefix in allowed_networks alone
    lets every IPv4 address behind it through: docs/attachments.md says to list it in both)."""
    assert Policy().nat64_prefixes == (ipaddress.ip_network("64:ff9b::/96"),)
    allowed = [ipaddress.ip_network("64:ff9b::/96"), NETWORK_SPECIFIC]
    metadata = ipaddress.ip_address(nat64("64:ff9b::", "169.254.169.254"))
    assert forbidden(metadata, allowed, [NETWORK_SPECIFIC]) == "a NAT64 address embedding a cloud metadata address"
    inside = ipaddress.ip_address(nat64("2001:db8:64::", "169.254.169.254"))
    assert forbidden(inside, allowed) == ""  # not named a NAT64 prefix: an allowed IPv6 address, as documented
    assert forbidden(inside, allowed, [NETWORK_SPECIFIC]) == "a NAT64 address embedding a cloud metadata address"


@pytest.mark.parametrize("value, why", [
    ("10.0.0.0/8", "not an IPv6 network"), ("2001:db8:64::/64", "not a /96"),
    ("2001:db8:64::1/96", "has host bits set"), ("nat64", "does not appear to be an IPv4 or IPv6 network"),
])
def test_nat64_prefixes_are_checked_at_start_up(make_config, tmp_path, capsys, value, why) -> None:
    from archiver import config as config_module
    from archiver.cli import main
    from archiver.config import ConfigError
    from conftest import write_toml

    with pytest.raises(ConfigError, match=f"attachments.nat64_prefixes: .*{why}"):
        config_module.load(None, environ={"ARCHIVER_ATTACHMENTS__NAT64_PREFIXES": f"64:ff9b::/96,{value}"})
    config = make_config()
    toml = write_toml(tmp_path / "c.toml", {**{k: config[k] for k in (
        "mongodb.uri", "index.database", "source.database", "storage.url", "encryption.recipients",
        "signing.certificate", "signing.key")}, "attachments.nat64_prefixes": [value]})
    assert main(["--config", str(toml), "run"]) == 2  # at start-up, before any work
    assert "attachments.nat64_prefixes" in capsys.readouterr().err
    loaded = Policy.from_config(make_config(attachments__nat64_prefixes=["2001:db8:64::/96", "64:ff9b::/96"]))
    assert loaded.nat64_prefixes == (NETWORK_SPECIFIC, ipaddress.ip_network("64:ff9b::/96"))


@pytest.mark.parametrize("port_", [6379, 9200, 22, 25, 8080])
def test_a_url_on_an_allowed_host_cannot_pick_a_port_not_in_attachments_ports(port_) -> None:
    """The port is the URL's choice: only attachments.ports (default 80 and 443) are asked, so a message cannot
    aim a request at Redis, Elasticsearch, SSH or SMTP on an allowed internal host. Stubbed network."""
    net = Network({"media.internal.example": ["10.20.0.7"]})
    internal = (ipaddress.ip_network("10.20.0.0/16"),)
    fetcher = Fetcher(policy(hosts=("media.internal.example",), allowed_networks=internal), net.resolve, net.connect)
    got = fetcher.attachment(message(f"http://media.internal.example:{port_}/x.png"))
    assert (got.outcome, got.reason) == (REFUSED, f"port {port_} not in attachments.ports")
    assert net.resolved == [] and net.connected == []
    for url, port_used in (("http://media.internal.example/x.png", 80), ("https://media.internal.example:443/x", 443)):
        assert fetcher.attachment(message(url)).outcome == FAILED  # asked: the stub refuses the connection
        assert net.connected[-1] == ("10.20.0.7", port_used)


def test_a_redirect_to_a_port_not_in_attachments_ports_is_refused(server, files) -> None:
    """Each hop is checked: the server's redirect cannot pick the port either. Only the test server is contacted."""
    files.add("/r.png", b"", status=302, Location="http://127.0.0.1:6379/x.png")
    real = socket.create_connection
    connected: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        connected.append(address)
        assert address == ("127.0.0.1", port(server)), f"tried to connect to {address}"
        return real(address, timeout)

    got = Fetcher(policy(port(server)), lambda host, p: ["127.0.0.1"], connect).attachment(message(f"{server}/r.png"))
    assert (got.outcome, got.reason) == (REFUSED, "redirected: port 6379 not in attachments.ports")
    assert connected == [("127.0.0.1", port(server))] and files.requests == ["/r.png"]


def test_attachments_ports_is_checked_at_load(make_config, tmp_path, capsys) -> None:
    from archiver import config as config_module
    from archiver.cli import main
    from archiver.config import ConfigError
    assert Policy.from_config(make_config()).ports == (80, 443)  # the default
    loaded = config_module.load(None, environ={"ARCHIVER_ATTACHMENTS__PORTS": "443, 8443"})
    assert loaded["attachments.ports"] == [443, 8443] and Policy.from_config(loaded).ports == (443, 8443)
    for environ in ("80,http", "80,0", "65536", ""):
        with pytest.raises(ConfigError, match="ATTACHMENTS__PORTS|attachments.ports"):
            config_module.load(None, environ={"ARCHIVER_ATTACHMENTS__PORTS": environ})
    for bad in ("[80, 0]", "[70000]", '["443"]', "[true]", "[]", "443", "[80.0]"):
        toml = tmp_path / "c.toml"
        toml.write_text(f"[attachments]\nports = {bad}\n")
        with pytest.raises(ConfigError, match=r"^attachments\.ports: "):
            config_module.load(toml, environ={})
        assert main(["--config", str(toml), "run"]) == 2  # at start-up, before any work
        assert "attachments.ports" in capsys.readouterr().err


def test_kept_files_count_in_the_caps_first_and_one_over_them_is_refused_unread(server, files) -> None:
    from archiver.attachments import Kept
    size = len(png())
    for i in range(3):
        files.add(f"/{i}.png", png())
    messages = [message(f"{server}/{i}.png", i + 1) for i in range(3)]
    two = Kept(1, "room/v1/attachment-2-x.png.p7m", "", "c" * 64, "p" * 64, size, "image/png", None)
    big = Kept(1, "room/v1/attachment-3-x.png.p7m", "", "d" * 64, "q" * 64, size + 11, "image/png", None)
    read: list[str] = []
    got = Fetcher(policy(port(server), max_bytes_per_chat=2 * size + 10)).fetch_all(
        messages, kept={2: [two], 3: [big]}, read=lambda file: read.append(file.key) or file)
    # message 2's kept file takes its bytes first; message 3's (size + 11) no longer fits; message 1's fetch gets the rest
    assert [a.outcome for a in got] == [FETCHED, FETCHED, REFUSED] and got[1].kept is two
    assert "too big" in got[2].reason and "max_bytes_per_chat" in got[2].reason
    assert read == [two.key] and files.requests == ["/0.png"]
    counted = Fetcher(policy(port(server), max_per_chat=1)).fetch_all(messages, kept={3: [two]})
    assert [a.outcome for a in counted] == [REFUSED, REFUSED, FETCHED] and "max_per_chat" in counted[0].reason


@pytest.mark.parametrize("allowed, prefixes, warned", [
    (["2001:db8:64::/96"], ["64:ff9b::/96"], ["2001:db8:64::/96"]),
    (["2001:db8:64::/96", "10.0.0.0/8", "2001:db8:65::/96"], [], ["2001:db8:64::/96", "2001:db8:65::/96"]),
    (["2001:db8:64::/96"], ["2001:db8:64::/96"], []),  # named in both, as documented
    (["64:ff9b::/96", "64:ff9b:1:a::/96"], [], []),  # the well-known prefix, a local-use one: always read as NAT64
    (["2001:db8::/64", "10.0.0.0/8"], ["64:ff9b::/96"], []),  # no /96
])
def test_a_96_in_allowed_networks_not_in_nat64_prefixes_is_warned_of(make_config, allowed, prefixes, warned) -> None:
    """docs/attachments.md: named only in allowed_networks, a gateway's /96 allows every IPv4 address behind it
    (metadata, loopback, private); it was accepted without a word. Only when attachments are fetched at all."""
    from archiver.attachments import unlisted_nat64_warning

    config = make_config(attachments__enabled=True, attachments__allowed_networks=allowed,
                         attachments__nat64_prefixes=prefixes)
    got = unlisted_nat64_warning(config)
    if not warned:
        assert got is None
        return
    assert got.startswith("attachments.allowed_networks names " + ", ".join(repr(w) for w in warned) + ", ")
    assert ("a /96 not in attachments.nat64_prefixes: if it is" if len(warned) == 1 else
            "/96s not in attachments.nat64_prefixes: if one is") in got, got
    assert "every IPv4 address behind it (metadata, loopback, private) is allowed" in got, got
    assert unlisted_nat64_warning(config.with_overrides(**{"attachments.enabled": False})) is None


def test_run_warns_at_start_up_of_a_96_not_in_nat64_prefixes(make_config, tmp_path, capsys) -> None:
    from archiver.cli import main
    from conftest import write_toml

    config = make_config()
    settings = {k: config[k] for k in ("mongodb.uri", "index.database", "source.database", "storage.url",
                                       "encryption.recipients", "signing.certificate", "signing.key")}
    settings |= {"attachments.enabled": True, "attachments.hosts": ["media.example.com"],
                 "storage.object_lock_mode": ""}  # (its own warning on a local store)
    toml = write_toml(tmp_path / "c.toml", {**settings,
                                            "attachments.allowed_networks": ["2001:db8:64::/96"]})
    assert main(["--config", str(toml), "run", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "warning: attachments.allowed_networks names '2001:db8:64::/96'" in out, out
    assert "nat64_prefix_not_listed" in err, "and a log event"
    listed = write_toml(tmp_path / "d.toml", {**settings, "attachments.allowed_networks": ["2001:db8:64::/96"],
                                              "attachments.nat64_prefixes": ["2001:db8:64::/96"]})
    assert main(["--config", str(listed), "run", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in out and "nat64_prefix_not_listed" not in err
