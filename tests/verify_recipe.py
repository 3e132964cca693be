#!/usr/bin/env python3
"""The verification recipe of docs/verify.md in Python 3 (standard library only).

Usage: verify_recipe.py DOCUMENT.json CASES.json
CASES.json is a list of {"key": str, "permission": str | null, "now": RFC 3339};
prints a JSON list of codes (VALID, MALFORMED, NOT_FOUND, ...), one per case.
keymint's tests run it and compare its answers with Keyring::verify's.
"""

import hashlib
import hmac
import json
import re
import sys
import zlib
from datetime import datetime

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIX = re.compile(r"^[a-z][a-z0-9]{0,15}$")
BODY = re.compile(r"^[0-9A-Za-z]{28,92}$")  # 22..86 random characters + 6 of checksum


def timestamp(text):
    # fromisoformat before Python 3.11 does not read a trailing "Z".
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def checksum_ok(key):
    """Optional offline check: a typo is MALFORMED without a lookup."""
    prefix, sep, body = key.partition("_")
    if not sep or not PREFIX.match(prefix) or not BODY.match(body):
        return False
    crc = zlib.crc32(key[:-6].encode())
    digits = ""
    for _ in range(6):
        digits = BASE62[crc % 62] + digits
        crc //= 62
    return hmac.compare_digest(digits, key[-6:])


def grants(permissions, wanted):
    for permission in permissions:
        if permission == wanted or permission == "*":
            return True
        if permission.endswith(":*"):
            prefix = permission[:-1]
            if wanted.startswith(prefix) and len(wanted) > len(prefix):
                return True
    return False


def verify(document, key, permission, now):
    if not checksum_ok(key):
        return "MALFORMED"
    digest = hashlib.sha256(key.encode()).hexdigest()
    member = None
    for candidate in document["members"]:
        # Constant-time comparison: the time taken says nothing about the hashes.
        if hmac.compare_digest(candidate["sha256"], digest):
            member = candidate
    if member is None:
        return "NOT_FOUND"
    if member["state"] == "revoked":
        return "REVOKED"
    if now < timestamp(member["notBefore"]):
        return "NOT_YET_VALID"
    expires_at = member.get("expiresAt")
    if expires_at is not None and now >= timestamp(expires_at):
        return "EXPIRED"
    if permission is not None and not grants(member.get("permissions", []), permission):
        return "PERMISSION_DENIED"
    return "VALID"


def main():
    with open(sys.argv[1], "rb") as f:
        document = json.load(f)
    if document.get("version") != "keymint.dev/keyring/v1":
        sys.exit("unsupported ring document version")
    with open(sys.argv[2], "rb") as f:
        cases = json.load(f)
    codes = [
        verify(document, case["key"], case.get("permission"), timestamp(case["now"]))
        for case in cases
    ]
    json.dump(codes, sys.stdout)


if __name__ == "__main__":
    main()
