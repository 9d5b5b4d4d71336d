"""``srgan key NAME``: make a new API key; print it once, and the ``SRGAN_API_KEYS`` entry that holds its hash."""

from __future__ import annotations

import argparse
import json
import secrets

from cli.exits import USAGE, fail
from core.settings import check_key_name, hash_api_key


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("key", help="make a new API key and print its SRGAN_API_KEYS entry",
                       description="Print a new random API key (give it to the client) and the JSON entry "
                                   "to put in SRGAN_API_KEYS (the service keeps only the key's hash).")
    p.add_argument("name", help="the key's name: jobs belong to it and logs show it (letters, digits, _ . -)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        check_key_name(args.name)
    except ValueError as exc:
        return fail(str(exc), USAGE)
    key = "srgan_" + secrets.token_urlsafe(32)
    print(f"key:   {key}")
    print(f"entry: {json.dumps({args.name: hash_api_key(key)})}")
    print("Give the key to its client; add the entry to SRGAN_API_KEYS (a JSON object of all entries).")
    return 0
