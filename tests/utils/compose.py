"""Reading docker-compose.yml and docker/compose.*.yml as compose does, for tests that cannot run Docker."""

from __future__ import annotations

import re
from typing import Any

EXAMPLE_DOTENV = {"SRGAN_API_KEYS": '{"alice": "sha256:' + "ab" * 32 + '"}',
                  "AWS_ACCESS_KEY_ID": "srgankey01", "AWS_SECRET_ACCESS_KEY": "s3cr3t" * 6,
                  "SRGAN_REDIS_PASSWORD": "redispw" + "0123456789" * 3, "SRGAN_LINK_SECRET": "link" + "0123456789" * 3}
"""What a user's .env holds at least (docs/service.md, docs/deploy.md)."""


def interpolate(value: str, dotenv: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error} (raises), $$ -> $."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        given = dotenv.get(name, "")
        if op == ":?" and not given:
            raise LookupError(f"{name}: {arg}")
        return given or (arg if op == ":-" else "")

    value = re.sub(r"(?<!\$)\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)
    return value.replace("$$", "$")


def env_of(service: dict[str, Any], dotenv: dict[str, str] | None = None) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    dotenv = EXAMPLE_DOTENV if dotenv is None else dotenv
    return {k: interpolate(str(v), dotenv) for k, v in env.items()}
