"""`srgan key NAME`: a new key, and the SRGAN_API_KEYS entry that holds only its hash."""

from __future__ import annotations

import pytest

from cli.main import main
from core.settings import Settings

pytestmark = pytest.mark.unit


def test_srgan_key_prints_a_key_and_the_entry_with_its_hash(capsys):
    import json

    from core.settings import hash_api_key

    assert main(["key", "alice"]) == 0
    out = capsys.readouterr().out
    key = out.split("key:", 1)[1].split()[0]
    entry = json.loads(out.split("entry:", 1)[1].splitlines()[0])
    assert len(key) > 40 and entry == {"alice": hash_api_key(key)}
    assert Settings(_env_file=None, api_keys=entry).api_keys == entry
    assert main(["key", "not a name"]) == 2
