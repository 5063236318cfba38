"""Shell commands (openssl, pdfsig, certutil, GNU date) that check our signatures without our code, at the time
each signature was made.

A certificate expires (and so does its CA); a signature made while they were valid stays valid. A check at
today's date would fail every genuine bundle once its signer expired, years before a court reads it. So each
command verifies the signer's chain to the reader's CA with `openssl ... -attime`, at:

- the time an RFC 3161 timestamp over the signature states, once that token verified against the timestamp
  authority's CA (TSA-CA.pem) at that time: the authority vouches that the signature existed then (PDFs
  signed with signing.timestamp_url, PAdES B-T; seals);
- otherwise the signing time the signature states (a CMS's signed signingTime attribute; a PDF's /M, inside
  its signed bytes, which pdfsig prints): the signer's own word. It proves the certificate was valid when the
  signer says it signed; it proves nothing against whoever holds the key (after it expired, say), who can
  state any time.

Each command prints "OK <file> (its signer chains to CA at <time>, <which time>)" or "FAILED <file>".
"""

from __future__ import annotations

# What pdfsig prints for one signature, valid, over the whole file, by a certificate that chains to a CA
# its NSS database trusts; compared whole, so that a signer name holding a line break adds no "OK".
# pdfsig (poppler 22.12) checks at today's date only: "Certificate has Expired" is taken as this line only
# because openssl then checks the chain at the signing time (it says "Expired" for a self-made certificate too).
PDFSIG_TRUSTED = ("Signature #1:\\n  - Total document signed\\n  - Signature Validation: Signature is Valid.\\n"
                  "  - Certificate Validation: Certificate is Trusted.")
SIGNER_TIME = "the signing time its signer states"
TIMESTAMP_TIME = "the time its RFC 3161 timestamp states, checked against @TSA_CA@"


def signing_time(p7s: str) -> str:
    """A shell command printing the signingTime attribute among the signed attributes of the CMS in P7S."""
    return (f'openssl cms -cmsout -print -inform DER -in "{p7s}" | awk \'/signedAttrs:/ {{a = 1}} '
            'a && /object: signingTime/ {s = 1} s && /TIME:/ {sub(/.*TIME:/, ""); print; exit}\'')


def token_time(tsr: str) -> str:
    """A shell command printing the time the RFC 3161 token TSR (DER) states."""
    return f'openssl ts -reply -in "{tsr}" -token_in -text 2>/dev/null | sed -n \'s/^Time stamp: //p\''


def cms_command(signature: str, content: str, ca: str, timestamp: str = "") -> str:
    """Check the detached CMS SIGNATURE (DER) over CONTENT at its signing time, or, when the file TIMESTAMP
    exists, at the time that token states (which timestamp_command checks). Paths may hold ${d}. It fails
    (exit status) when it prints FAILED: a script that reads the status alone sees the failure too."""
    stamped = (f'if [ -f "{timestamp}" ]; then t=$({token_time(timestamp)}); '
               f'how="the time its RFC 3161 timestamp states (checked below)"; fi; ' if timestamp else "")
    return (f't=$({signing_time(signature)}); how="{SIGNER_TIME}"; {stamped}'
            f'[ -n "$t" ] && at=$(date -ud "$t" +%s) && openssl cms -verify -binary -inform DER -in "{signature}" '
            f'-content "{content}" -CAfile {ca} -attime "$at" -out /dev/null 2>/dev/null && echo "OK {content} '
            f'(its signer chains to {ca} at $(date -ud @$at +%FT%TZ), $how)" || {{ echo "FAILED {content}"; false; }}')


def timestamp_command(data: str, tsr: str, tsa_ca: str) -> str:
    """Check the RFC 3161 token TSR over the file DATA against TSA_CA, at the time the token states (fails when
    it prints FAILED)."""
    return (f't=$({token_time(tsr)}); [ -n "$t" ] && openssl ts -verify -data "{data}" -in "{tsr}" -token_in '
            f'-CAfile {tsa_ca} -attime "$(date -ud "$t" +%s)" >/dev/null 2>&1 && echo "OK {tsr} (at '
            f'$(date -ud "$t" +%FT%TZ), the time it states)" || {{ echo "FAILED {tsr}"; false; }}')


# One PDF, in a temporary folder holding it as t.pdf: pdfsig's verdict (in "info"), its CMS (t.pdf.sig0) and the
# bytes it signs (cut out at the ranges pdfsig names); then the time to check at: a signature timestamp token
# (the unsigned attribute that follows the SignerInfo's signature value) verified over that value, or /M.
_PDF_STEPS = r"""TZ=UTC pdfsig -nssdir "sql:$nss" t.pdf > info; TZ=UTC pdfsig -nssdir "sql:$nss" -dump t.pdf > /dev/null \
    && [ "$(grep -e '^Signature #' -e 'document signed' -e 'Validation:' info | sed 's/Certificate has Expired$/Certificate is Trusted./')" = "$(printf '@TRUSTED@')" ] \
    && set -- $(sed -n 's/^  - Signed Ranges: \[\([0-9]*\) - \([0-9]*\)\], \[\([0-9]*\) - \([0-9]*\)\]$/\1 \2 \3 \4/p' info) && [ $# = 4 ] \
    && { tail -c +$(($1 + 1)) t.pdf | head -c $(($2 - $1)); tail -c +$(($3 + 1)) t.pdf | head -c $(($4 - $3)); } > signed \
    && openssl asn1parse -inform DER -in t.pdf.sig0 > asn1 && if grep -q ':id-smime-aa-timeStampToken *$' asn1; then \
      set -- $(awk '{ l[NR] = $0 } /:id-smime-aa-timeStampToken *$/ && l[NR-2] ~ /d=5 .*cont \[ 1 \]/ && l[NR-3] ~ /d=5 .*prim: OCTET STRING/ { print l[NR-3]; getline; getline; print }' asn1 | sed 's/^ *\([0-9]*\):d=[0-9]* *hl=\([0-9]*\) *l= *\([0-9]*\).*/\1 \2 \3/') && [ $# = 6 ] \
      && tail -c +$(($1 + $2 + 1)) t.pdf.sig0 | head -c $3 > value && tail -c +$(($4 + 1)) t.pdf.sig0 | head -c $(($5 + $6)) > token \
      && t=$(@TOKEN_TIME@) && [ -n "$t" ] && openssl ts -verify -in token -token_in -data value -CAfile "$here/@TSA_CA@" -attime "$(date -ud "$t" +%s)" > /dev/null 2>&1 \
      && how="@TIMESTAMP_TIME@"; else t=$(sed -n 's/^  - Signing Time: //p' info); how="@SIGNER_TIME@"; fi \
    && [ -n "$t" ] && at=$(date -ud "$t" +%s) && openssl cms -verify -binary -inform DER -in t.pdf.sig0 -content signed -CAfile "$here/@CA@" -attime "$at" -out /dev/null 2>/dev/null \
    && echo "OK $f (its signer chains to @CA@ at $(date -ud @$at +%FT%TZ), $how)"
"""


def pdf_command(pdfs: str, ca: str, tsa_ca: str) -> str:
    """A shell command printing "OK <pdf> (…)" or "FAILED <pdf>" for each of PDFS (a glob): OK when pdfsig finds
    exactly one signature, valid, over the whole file, by a certificate its NSS database (a temporary one
    trusting CA alone) finds trusted or expired, and openssl finds that signature, over the bytes pdfsig
    names, made by a certificate that chained to CA at the time of signing (module docstring). It fails (exit
    status) when any PDF does."""
    steps = _PDF_STEPS
    for name, value in (("TOKEN_TIME", token_time("token")), ("TIMESTAMP_TIME", TIMESTAMP_TIME),
                        ("SIGNER_TIME", SIGNER_TIME), ("TRUSTED", PDFSIG_TRUSTED), ("TSA_CA", tsa_ca), ("CA", ca)):
        steps = steps.replace(f"@{name}@", value)
    return ('here=$PWD; bad=0; nss=$(mktemp -d); certutil -N -d "sql:$nss" --empty-password; '
            f'certutil -A -d "sql:$nss" -n CA -t CT,C,C -i {ca}; \\\n'
            f'  for f in {pdfs}; do w=$(mktemp -d); cp "$f" "$w/t.pdf"; ( cd "$w" && {steps.strip()} ) '
            '|| { echo "FAILED $f"; bad=1; }; rm -rf "$w"; done; rm -rf "$nss"; [ $bad = 0 ]')
