"""The Lua scripts of the job store and the limits: ``core/lua/*.lua``, read once per process.

Each file is one atomic step (a move of ``core.job_states``, an admission, a rate-limit hit). A
script whose first line is ``-- uses: LIB[, LIB...]`` gets those files (``core/lua/LIB.lua``: the
helpers it calls) put before it; ``${NAME}`` placeholders take the values the caller passes (Lua
itself never uses ``$``). ``tests/integration/service/test_lua_scripts.py`` loads every script into
a real Redis, which compiles it.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from string import Template

import redis
from redis.commands.core import Script

LUA_DIR = Path(__file__).resolve().parent / "lua"
_USES = re.compile(r"-- uses: ([\w, ]+)\n")


@functools.cache
def _read(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def lua_source(name: str, **values: object) -> str:
    """The text of script ``name`` (``core/lua/<name>.lua``), after its libraries, with ``values`` filled in."""
    text = _read(name)
    uses = _USES.match(text)
    libs = [lib.strip() for lib in uses.group(1).split(",")] if uses else []
    return Template("".join(_read(lib) for lib in libs) + text).substitute(values)


def register(client: redis.Redis, name: str, **values: object) -> Script:
    """Script ``name`` registered with ``client`` (run by its SHA, loaded into Redis on first use)."""
    return client.register_script(lua_source(name, **values))
