"""docker-compose.yml and docker/ cannot drift from the code: Docker cannot run here, so this test reads
them and checks services, commands, ports, volumes and environment against Settings and `srgan`."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import tomllib
import yaml

from cli.main import build_parser
from core.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


EXAMPLE_DOTENV = {"SRGAN_API_KEYS": '{"alice": "sha256:' + "ab" * 32 + '"}'}
"""What a user's .env holds at least (docs/service.md)."""


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


def env_of(service: dict, dotenv: dict[str, str] | None = None) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    dotenv = EXAMPLE_DOTENV if dotenv is None else dotenv
    return {k: interpolate(str(v), dotenv) for k, v in env.items()}


def dockerfile(service: dict) -> str:
    return (REPO / service["build"]["context"] / service["build"]["dockerfile"]).read_text()


def dockerfile_env(text: str) -> dict[str, str]:
    """The ENV entries of a Dockerfile (``ENV A=1 \\`` continuation lines included)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for token in shlex.split(line[4:]):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("SRGAN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def test_the_services_are_there():
    assert {"redis", "api", "worker", "flower", "trainer"} <= set(SERVICES)
    assert SERVICES["flower"].get("profiles") == ["flower"]
    assert SERVICES["trainer"].get("profiles") == ["trainer"], "plain `docker compose up` starts no trainer"
    for name in ("redis", "api", "worker"):
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert "profiles" not in SERVICES[name]


def test_redis_keeps_jobs_appendonly_and_never_evicts():
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


@pytest.mark.parametrize("name", ["api", "worker", "trainer"])
def test_srgan_environment_names_settings_fields_and_parses(name, monkeypatch):
    service = SERVICES[name]
    env = {**dockerfile_env(dockerfile(service)), **env_of(service)}
    fields = {f"SRGAN_{f.upper()}" for f in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith("SRGAN_") and k not in fields)
    assert not unknown, f"{name}: not settings: {unknown}"
    settings = settings_from({k: v for k, v in env.items() if k.startswith("SRGAN_")}, monkeypatch)
    url = urlparse(settings.redis_url)
    assert url.hostname in SERVICES, "the Redis URL names a compose service"
    assert (url.port or 6379) == 6379
    assert settings.redis_url is not None and settings.redis_url.startswith("redis://")


@pytest.mark.parametrize(("name", "subcommand"), [("api", "serve"), ("worker", "worker")])
def test_commands_are_srgan_subcommands(name, subcommand):
    command = SERVICES[name]["command"]
    assert command[0] in PYPROJECT["project"]["scripts"], "a console script of pyproject.toml"
    assert PYPROJECT["project"]["scripts"][command[0]] == "cli.main:main"
    args = build_parser().parse_args(command[1:])
    assert args.command == subcommand
    assert args.func.__module__ == f"cli.{subcommand}"
    assert re.search(rf'CMD \["srgan", "{subcommand}"', dockerfile(SERVICES[name])), "the image runs the same"


def test_the_api_needs_a_key_from_dotenv_and_then_may_serve_beyond_loopback(monkeypatch):
    from cli.serve import refuse_exposure

    api = SERVICES["api"]
    with pytest.raises(LookupError, match="SRGAN_API_KEYS.*\\.env"):
        env_of(api, dotenv={})
    settings = settings_from({k: v for k, v in env_of(api).items() if k.startswith("SRGAN_")}, monkeypatch)
    assert settings.api_keys == {"alice": "sha256:" + "ab" * 32} and settings.allowed_hosts
    host = build_parser().parse_args(api["command"][1:]).host
    assert refuse_exposure(host, settings, insecure=False) is None, "compose starts without --insecure"
    assert "--insecure" not in api["command"]


@pytest.mark.parametrize("name", ["api", "flower"])
def test_ports_are_published_on_loopback_unless_dotenv_says_otherwise(name):
    for mapping in SERVICES[name]["ports"]:
        assert interpolate(mapping, {}).startswith("127.0.0.1:"), mapping
        assert interpolate(mapping, {"SRGAN_PUBLISH_ADDR": "0.0.0.0"}).startswith("0.0.0.0:"), mapping


def test_flower_never_starts_without_basic_auth(tmp_path):
    import subprocess

    flower = SERVICES["flower"]
    assert env_of(flower, {})["FLOWER_BASIC_AUTH"] == ""
    entrypoint = [interpolate(part, {}) for part in flower["entrypoint"]]
    marker = tmp_path / "started"
    probe = ["sh", "-c", f'echo "$FLOWER_BASIC_AUTH" > {marker}']  # stands in for `celery flower`
    refused = subprocess.run([*entrypoint, *probe], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert refused.returncode != 0 and "FLOWER_BASIC_AUTH" in refused.stderr and not marker.exists()
    started = subprocess.run([*entrypoint, *probe], env={"PATH": os.environ["PATH"], "FLOWER_BASIC_AUTH": "u:p"})
    assert started.returncode == 0 and marker.read_text().strip() == "u:p"
    assert flower["command"][:2] == ["celery", "flower"]


def test_api_port_matches_the_command_the_mapping_and_the_health_check():
    api = SERVICES["api"]
    port = build_parser().parse_args(api["command"][1:]).port
    assert [str(p).split(":")[-1] for p in api["ports"]] == [str(port)]
    assert f"127.0.0.1:{port}/healthz" in " ".join(api["healthcheck"]["test"])
    assert f"EXPOSE {port}" in dockerfile(api)


def test_api_and_workers_share_the_data_volume():
    api, worker = SERVICES["api"], SERVICES["worker"]
    data_dir = env_of(api).get("SRGAN_DATA_DIR")
    assert data_dir and env_of(worker).get("SRGAN_DATA_DIR") == data_dir
    mounts = {name: {v.split(":")[1]: v.split(":")[0] for v in SERVICES[name]["volumes"]} for name in ("api", "worker")}
    assert mounts["api"][data_dir] == mounts["worker"][data_dir] in COMPOSE["volumes"]
    models_dir = env_of(api).get("SRGAN_MODELS_DIR")
    assert models_dir and mounts["api"][models_dir] == mounts["worker"][models_dir] in COMPOSE["volumes"]


def test_worker_reserves_a_gpu_and_scales():
    worker = SERVICES["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "container_name" not in worker and "ports" not in worker, "--scale worker=N needs neither"
    assert "--name" in worker["command"] and "%h" in worker["command"][-1], "one node name per container"
    hostname_in_check = worker["healthcheck"]["test"][-1]
    assert worker["command"][-1].replace("%h", "$$HOSTNAME") in hostname_in_check


def test_images_install_extras_that_exist():
    extras = PYPROJECT["project"]["optional-dependencies"]
    worker_file = dockerfile(SERVICES["worker"])
    assert re.search(r"^FROM nvidia/cuda:\S+-cudnn-runtime-", worker_file, re.M)
    assert 'pip install --no-deps ".[gpu]"' in worker_file and "onnxruntime-gpu" in " ".join(extras["gpu"])
    api_file = dockerfile(SERVICES["api"])
    assert "pip install --no-deps ." in api_file and "onnxruntime" not in api_file, \
        "the API image needs no ONNX Runtime"
    # the dependencies come from the lock files, hashes required
    assert "pip install --require-hashes -r requirements/worker-gpu.lock" in worker_file
    assert "pip install --require-hashes -r requirements/api.lock" in api_file
    api_lock = (REPO / "requirements" / "api.lock").read_text()
    assert "\nonnxruntime" not in api_lock and "--hash=sha256:" in api_lock
    assert "\nonnxruntime-gpu==" in (REPO / "requirements" / "worker-gpu.lock").read_text()
    for name in ("api", "worker"):
        text = dockerfile(SERVICES[name])
        copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
        packages = set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
        assert {p.rstrip("*") for p in packages} <= copied, f"{name} image copies every package"


def test_flower_uses_the_same_broker():
    """Flower reads the broker from CELERY_BROKER_URL, the YAML alias of the services' SRGAN_REDIS_URL;
    a --broker in its command would override it."""
    flower = SERVICES["flower"]
    assert not any("broker" in part for part in flower["command"]), "no broker of its own in the command"
    assert flower["command"][:2] == ["celery", "flower"]
    broker = env_of(flower).get("CELERY_BROKER_URL")
    assert broker, "Flower's broker comes from the environment"
    for name in ("api", "worker", "trainer"):
        assert broker == env_of(SERVICES[name])["SRGAN_REDIS_URL"], name
    text = (REPO / "docker-compose.yml").read_text()
    assert text.count("redis://") == 1, "one Redis URL in the file, which Flower's refers to"
    alias = re.search(r"^\s+CELERY_BROKER_URL: \*(\S+)", text, re.M)
    anchor = re.search(r"^\s+SRGAN_REDIS_URL: &(\S+) redis://", text, re.M)
    assert alias and anchor and alias.group(1) == anchor.group(1), "an alias of the anchored URL"


# --- the trainer profile (retrain and redeploy) ---------------------------------------
DOCS = (REPO / "docs" / "service.md").read_text()


def test_trainer_runs_srgan_and_shares_the_models_volume():
    trainer = SERVICES["trainer"]
    assert trainer["entrypoint"] == ["srgan"] and 'ENTRYPOINT ["srgan"]' in dockerfile(trainer)
    assert build_parser().parse_args(trainer["command"]).command == "models"
    models_dir = env_of(trainer)["SRGAN_MODELS_DIR"]
    assert models_dir == env_of(SERVICES["api"])["SRGAN_MODELS_DIR"] == env_of(SERVICES["worker"])["SRGAN_MODELS_DIR"]
    mounts = {}
    for volume in trainer["volumes"]:
        source, target = volume.removesuffix(":ro").rsplit(":", 1)  # sources may be ${VAR:-default}
        mounts[target] = source
    assert mounts[models_dir] == "models" in COMPOSE["volumes"], "the volume the API and workers read"
    assert mounts["/runs"] in COMPOSE["volumes"], "checkpoints outlive the container"
    assert "/datasets" in mounts


def test_trainer_image_is_tensorflow_with_the_rest_of_the_train_extra():
    text = dockerfile(SERVICES["trainer"])
    assert re.search(r"^FROM tensorflow/tensorflow:\S+", text, re.M)
    (install,) = re.findall(r'pip install "\.\[(\w+)\]"((?: "[^"]+")*)', text)
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert install[0] in extras
    train = set(extras["train"])
    for requirement in re.findall(r'"([^"]+)"', install[1]):
        assert requirement in train, f"{requirement} is not the train extra's requirement"
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    assert {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]} <= copied


def test_the_documented_retrain_sequence_parses():
    prefix = "docker compose --profile trainer run --rm trainer "
    lines = [line.strip() for line in DOCS.splitlines() if line.strip().startswith(prefix)]
    commands = {build_parser().parse_args(shlex.split(line[len(prefix):].split(" #")[0])).command for line in lines}
    assert {"train", "export", "deploy", "models", "rollback"} <= commands, commands
