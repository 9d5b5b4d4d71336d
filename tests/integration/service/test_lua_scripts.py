"""The Lua scripts (core/lua/*.lua) compile in a real Redis, and no Lua is left in Python strings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from core.jobs import EVENT_LOG_MAX
from core.lua_scripts import LUA_DIR, lua_source

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
LIBRARIES = {"job_lib", "gcra"}
"""Files that are only put before other scripts (they define functions and run nothing on their own)."""


@pytest.fixture(scope="module")
def client(redis_db):
    client = redis.Redis.from_url(redis_db(), decode_responses=True)
    yield client
    client.close()


def scripts() -> list[str]:
    return sorted(p.stem for p in LUA_DIR.glob("*.lua") if p.stem not in LIBRARIES)


def test_every_script_compiles_in_redis(client):
    assert len(scripts()) >= 11
    for name in scripts():
        text = lua_source(name, EVENT_LOG_MAX=EVENT_LOG_MAX)
        assert "${" not in text, f"{name}: a placeholder was left unfilled"
        sha = client.script_load(text)  # Redis compiles the script: a syntax error is a ResponseError
        assert client.script_exists(sha) == [True], name


def test_a_syntax_error_is_caught_by_loading(client):
    with pytest.raises(redis.ResponseError, match="(?i)compil|syntax|expected"):
        client.script_load(lua_source("job_touch", EVENT_LOG_MAX=EVENT_LOG_MAX) + "\nif then end\n")


def test_no_lua_in_python_sources():
    calls = [p.relative_to(ROOT).as_posix() for folder in ("api", "core", "worker", "model", "cli", "bench")
             for p in (ROOT / folder).rglob("*.py") if re.search(r"redis\.call\(", p.read_text())]
    assert not calls, f"Lua in Python strings (put it in core/lua/): {calls}"
