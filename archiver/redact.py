"""Credentials never leave in a message: the userinfo of every URI in a text becomes `***`, so do
secrets in URI options (`...Password=`, `AWS_SESSION_TOKEN:`), and so does every password the
configuration holds, wherever it appears (the driver takes quotes and spaces unescaped in a
password, and no pattern can tell where such a one ends).

Used for every message that can hold a URI: configuration errors, the CLI's error line,
every log line, errors recorded in MongoDB, storage errors (endpoint URLs) and /healthz.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

# MongoDB URIs: everything up to the last "@" of the URI, so that a password mistyped with
# an unescaped "/" is hidden too (the driver also splits there). Other schemes: userinfo as
# RFC 3986 has it (no "/"), so that "@" in an object key (s3://bucket/room@example.com) stays.
_MONGODB = re.compile(r"(mongodb(?:\+srv)?://)[^\s'\"<>]*@")
_OTHER = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>/@]*@")


_OPTION = re.compile(r"(?i)((?:password|secret|token)[a-z0-9_]*[=:])[^&\s'\",;]+")
_KNOWN: set[str] = set()  # the configuration's passwords (see remember_secrets)
# Option names that hold a credential; a service's URL (TSA, S3 endpoint) may also carry an API key, a
# signature (Azure SAS `sig`, AWS `X-Amz-Signature`), a code or a session as an option.
_SECRET = re.compile(r"(?i)pass|pwd|secret|token")
_SERVICE_SECRET = re.compile(r"(?i)pass|pwd|secret|token|key|sig|code|auth|cred|session|jwt|bearer|private")
SHORTEST_KNOWN = 4  # a shorter "password" would blank out ordinary text everywhere


def redact(text: str) -> str:
    """TEXT with the user name and password of every URI in it, secrets in URI options, and every
    password the configuration holds, replaced by ***."""
    for secret in sorted(_KNOWN, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return _OPTION.sub(r"\1***", _OTHER.sub(r"\1***@", _MONGODB.sub(r"\1***@", text)))


def remember_secrets(uri: str, service: bool = False) -> None:
    """Hide URI's password, and secrets among its options (SERVICE: a service's URL, which may also carry an
    API key, a code or a signature as an option), in every message from now on."""
    _, sep, rest = uri.partition("://")
    if not sep and not service:
        return
    rest = rest if sep else uri  # a service URL without its scheme (refused as such) still carries its credentials
    if "@" in rest:  # the driver splits userinfo from hosts at the last "@"
        password = rest[:rest.rindex("@")].partition(":")[2]
        remember_secret(password)
    secret_name = _SERVICE_SECRET if service else _SECRET
    for option in rest.partition("?")[2].partition("#")[0].split("&"):
        name, _, raw = option.partition("=")
        if raw and secret_name.search(unquote_plus(name)):
            for value in (raw, unquote_plus(raw)):  # as written in the URL (%2B...) and decoded
                remember_secret(value)
                remember_secret(value.partition(":")[2])  # authMechanismProperties=AWS_SESSION_TOKEN:...


def remember_secret(secret: str) -> None:
    """Hide SECRET (a password the configuration holds), and its URL-decoded form, in every message from now on."""
    for form in (secret, unquote(secret)):
        if len(form) >= SHORTEST_KNOWN:
            _KNOWN.add(form)


KEY_MATERIAL = "looks like key material, not a path; value withheld"
MAX_PATH_CHARS = 1024  # longer than any path a deployment names; a PEM or base64 key is not
# One line of base64 (a DER or PKCS#12 key as secrets stores hand them out) or of hex (a search key): 64 characters
# or more with no dot, dash or underscore. Base64 starts with a "/" one time in 64: so may such a line.
_ENCODED_KEY = re.compile(r"[A-Za-z0-9+/=]{64,}")
# Such a line with a "/" may be a path ("keys/3f9a…", a content-addressed name; "/run/secrets/…"): base64 of 64
# characters or more holds upper case, lower case and digits (all but certainly), such a path does not mix all three
# nor hold "+" or "=", and is shorter.
_LONGEST_RELATIVE = 200


def looks_like_key_material(value: str) -> bool:
    """Whether VALUE, given where the path of a file of secret material belongs, is rather the secret itself
    (container secrets are often handed over as the key's text, not as a file)."""
    return ("-----BEGIN" in value or "PRIVATE KEY" in value or "\n" in value or "\r" in value
            or len(value) > MAX_PATH_CHARS or _encoded_key(value))


def _encoded_key(value: str) -> bool:
    if not _ENCODED_KEY.fullmatch(value):
        return False
    mixed = all(re.search(chars, value) for chars in ("[A-Z]", "[a-z]", "[0-9]"))
    return "/" not in value or len(value) >= _LONGEST_RELATIVE or mixed or "+" in value or "=" in value


def key_material_refusal(name: str, value: str) -> str | None:
    """Why VALUE, given as NAME (a setting or option naming a file of secret material), is refused without being
    shown; None when it may be a path. Every message that quotes such a path must ask this first."""
    return f"{name}: {KEY_MATERIAL}" if looks_like_key_material(value) else None
