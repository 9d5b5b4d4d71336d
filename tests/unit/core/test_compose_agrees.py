"""docker-compose.yml and docker/ cannot drift from the code: Docker cannot run here, so this test reads
them and checks services, commands, ports, volumes and environment against Settings and `srgan`."""

from __future__ import annotations

import json
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
from tests.utils.compose import EXAMPLE_DOTENV, env_of, interpolate

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


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
    assert {"redis", "objectstore", "api", "worker", "worker-gpu", "flower", "trainer"} <= set(SERVICES)
    assert SERVICES["flower"].get("profiles") == ["flower"]
    assert SERVICES["trainer"].get("profiles") == ["trainer"], "plain `docker compose up` starts no trainer"
    assert SERVICES["worker-gpu"].get("profiles") == ["gpu"], "plain `docker compose up` needs no NVIDIA toolkit"
    for name in ("redis", "objectstore", "api", "worker", "worker-gpu"):
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert "profiles" not in SERVICES[name] or name == "worker-gpu"


def test_redis_keeps_jobs_appendonly_and_never_evicts():
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu", "trainer", "webhooks", "objectstore-init"])
def test_srgan_environment_names_settings_fields_and_parses(name, monkeypatch):
    service = SERVICES[name]
    built = service if "build" in service else next(s for s in SERVICES.values() if s.get("image") == service["image"]
                                                      and "build" in s)
    env = {**dockerfile_env(dockerfile(built)), **env_of(service)}
    fields = {f"SRGAN_{f.upper()}" for f in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith("SRGAN_") and k not in fields)
    assert not unknown, f"{name}: not settings: {unknown}"
    settings = settings_from({k: v for k, v in env.items() if k.startswith("SRGAN_")}, monkeypatch)
    url = urlparse(settings.redis_url)
    assert url.hostname in SERVICES, "the Redis URL names a compose service"
    assert (url.port or 6379) == 6379
    assert settings.redis_url is not None and settings.redis_url.startswith("redis://")


@pytest.mark.parametrize(("name", "subcommand"), [("api", "serve"), ("worker", "worker"), ("worker-gpu", "worker")])
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
        env_of(api, dotenv={k: v for k, v in EXAMPLE_DOTENV.items() if k != "SRGAN_API_KEYS"})
    settings = settings_from({k: v for k, v in env_of(api).items() if k.startswith("SRGAN_")}, monkeypatch)
    assert settings.api_keys == {"alice": "sha256:" + "ab" * 32} and settings.allowed_hosts
    host = build_parser().parse_args(api["command"][1:]).host
    assert refuse_exposure(host, settings, insecure=False) is None, "compose starts without --insecure"
    assert "--insecure" not in api["command"]


@pytest.mark.parametrize("name", ["proxy", "flower"])
def test_ports_are_published_on_loopback_unless_dotenv_says_otherwise(name):
    for mapping in SERVICES[name]["ports"]:
        assert interpolate(mapping, {}).startswith("127.0.0.1:"), mapping
        assert interpolate(mapping, {"SRGAN_PUBLISH_ADDR": "0.0.0.0"}).startswith("0.0.0.0:"), mapping


def test_flower_never_starts_without_basic_auth(tmp_path):
    import subprocess

    flower = SERVICES["flower"]
    assert env_of(flower, EXAMPLE_DOTENV)["FLOWER_BASIC_AUTH"] == ""
    entrypoint = [interpolate(part, {}) for part in flower["entrypoint"]]
    marker = tmp_path / "started"
    probe = ["sh", "-c", f'echo "$FLOWER_BASIC_AUTH" > {marker}']  # stands in for `celery flower`
    refused = subprocess.run([*entrypoint, *probe], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert refused.returncode != 0 and "FLOWER_BASIC_AUTH" in refused.stderr and not marker.exists()
    started = subprocess.run([*entrypoint, *probe], env={"PATH": os.environ["PATH"], "FLOWER_BASIC_AUTH": "u:p"})
    assert started.returncode == 0 and marker.read_text().strip() == "u:p"
    assert flower["command"][:2] == ["celery", "flower"]


def test_api_port_matches_the_command_the_proxy_and_the_health_check():
    api, proxy = SERVICES["api"], SERVICES["proxy"]
    port = build_parser().parse_args(api["command"][1:]).port
    assert "ports" not in api and [str(p) for p in api["expose"]] == [str(port)], "reached through the proxy only"
    assert env_of(proxy)["SRGAN_PROXY_UPSTREAM"] == f"api:{port}"
    assert f"127.0.0.1:{port}/healthz" in " ".join(api["healthcheck"]["test"])
    assert f"EXPOSE {port}" in dockerfile(api)
    listen = re.search(r"^\s*listen (\d+);", PROXY_TEMPLATE, re.M)
    assert listen and [str(p).split(":")[-1] for p in proxy["ports"]] == [listen[1]]
    assert f"127.0.0.1:{listen[1]}/healthz" in " ".join(proxy["healthcheck"]["test"])


PROXY_TEMPLATE = (REPO / "docker" / "nginx" / "srgan.conf.template").read_text()


def rendered_proxy(env: dict[str, str]) -> str:
    """The template as nginx's image renders it (envsubst of the variables in its environment only)."""
    return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], m[0]), PROXY_TEMPLATE)


def test_a_proxy_fronts_the_api_with_the_apis_own_deadlines_caps_and_upload_limit(monkeypatch):
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginxinc/nginx-unprivileged:")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert mounts["/etc/nginx/templates/default.conf.template"] == "./docker/nginx/srgan.conf.template"
    env = env_of(proxy)
    api_env = {k: v for k, v in env_of(SERVICES["api"]).items() if k.startswith("SRGAN_")}
    settings = settings_from(api_env, monkeypatch)
    conf = rendered_proxy(env)
    assert "${" not in conf, "every variable of the template is given"

    def directive(name: str) -> str:
        found = re.search(rf"^\s*{name} ([^;]+);", conf, re.M)
        assert found, name
        return found[1]

    assert directive("client_header_timeout") == f"{settings.http_header_timeout_s:g}s"
    assert directive("keepalive_timeout") == f"{settings.http_idle_timeout_s:g}s"
    assert directive("client_body_timeout") == f"{settings.upload_idle_timeout_s:g}s"
    assert directive("limit_conn srgan_all") == str(settings.http_max_connections)
    assert int(directive("limit_conn srgan_per_client")) <= settings.http_max_connections
    body = directive("client_max_body_size")
    assert body.endswith("m") and int(body[:-1]) * 2**20 >= max(settings.max_batch_bytes, settings.max_upload_bytes)
    assert directive("server_tokens") == "off"
    assert directive("proxy_buffering") == "off", "Server-Sent Events pass as they happen"


def mounts_of(service: dict) -> dict[str, str]:
    """target -> source of a service's volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_api_and_workers_share_only_redis_the_object_store_and_the_models_volume(monkeypatch):
    """The many-hosts shape on one box: jobs' files go through the object store, not a shared folder."""
    names = ("api", "worker", "worker-gpu", "objectstore-init")
    settings = {name: settings_from({k: v for k, v in env_of(SERVICES[name]).items() if k.startswith("SRGAN_")},
                                    monkeypatch) for name in names}
    for name in names:
        assert settings[name].storage_url == settings["api"].storage_url and settings[name].storage_url.startswith(
            "s3://"), name
        assert settings[name].s3_endpoint_url == settings["api"].s3_endpoint_url, name
        assert settings[name].redis_url == settings["api"].redis_url, name
        assert env_of(SERVICES[name])["AWS_ACCESS_KEY_ID"] == EXAMPLE_DOTENV["AWS_ACCESS_KEY_ID"], name
    data_dir = str(settings["api"].data_dir)
    api_data = mounts_of(SERVICES["api"])[data_dir]
    for name in ("worker", "worker-gpu"):
        assert data_dir not in mounts_of(SERVICES[name]), f"{name} keeps its own data folder"
        assert api_data not in mounts_of(SERVICES[name]).values()
    models_dir = str(settings["api"].models_dir)
    models = {name: mounts_of(SERVICES[name])[models_dir] for name in ("api", "worker", "worker-gpu", "trainer")}
    assert set(models.values()) == {"models"} and "models" in COMPOSE["volumes"], "one registry on this box"


def test_the_object_store_serves_s3_where_the_services_look_with_the_key_pair_from_dotenv(monkeypatch):
    store = SERVICES["objectstore"]
    assert store["image"].startswith("chrislusf/seaweedfs:") and not store["image"].endswith(":latest")
    args = dict(a.lstrip("-").split("=", 1) for a in store["command"][1:])
    assert store["command"][0] == "mini"
    settings = settings_from({k: v for k, v in env_of(SERVICES["api"]).items() if k.startswith("SRGAN_")}, monkeypatch)
    endpoint = urlparse(settings.s3_endpoint_url)
    assert endpoint.hostname == "objectstore" and endpoint.port == int(args["s3.port"]) and args["ip"] == "objectstore"
    assert f"127.0.0.1:{args['s3.port']}/healthz" in " ".join(store["healthcheck"]["test"])
    assert any(v.endswith(":" + args["dir"]) and v.split(":")[0] in COMPOSE["volumes"] for v in store["volumes"])
    # the entrypoint writes S3_IDENTITIES where -s3.config reads it; the only identity is the .env key pair
    entry = [interpolate(part, {}) for part in store["entrypoint"]]
    assert entry[:2] == ["sh", "-c"] and f'> {args["s3.config"]} ' in entry[2] and 'exec weed "$@"' in entry[2]
    identities = json.loads(env_of(store)["S3_IDENTITIES"])["identities"]
    assert [i["credentials"] for i in identities] == [[{"accessKey": EXAMPLE_DOTENV["AWS_ACCESS_KEY_ID"],
                                                        "secretKey": EXAMPLE_DOTENV["AWS_SECRET_ACCESS_KEY"]}]]
    with pytest.raises(LookupError, match="AWS_ACCESS_KEY_ID.*\\.env"):
        env_of(SERVICES["api"], dotenv={k: v for k, v in EXAMPLE_DOTENV.items() if not k.startswith("AWS_")})


def test_objectstore_init_makes_the_bucket_the_services_use_before_they_start(monkeypatch):
    init = SERVICES["objectstore-init"]
    assert init["image"] == SERVICES["api"]["image"], "the API image has boto3"
    assert init["command"][:2] == ["python", "-c"]
    code = init["command"][2]
    compile(code, "objectstore-init", "exec")
    assert "s.storage_url" in code and "s.s3_endpoint_url" in code, "the bucket and endpoint come from Settings"
    assert init["depends_on"]["objectstore"]["condition"] == "service_healthy"
    for name in ("api", "worker", "worker-gpu"):
        assert SERVICES[name]["depends_on"]["objectstore-init"]["condition"] == "service_completed_successfully"


def test_the_default_worker_runs_on_the_cpu():
    worker = SERVICES["worker"]
    assert "deploy" not in worker and "profiles" not in worker, "`docker compose up` works without the NVIDIA toolkit"
    assert worker["build"]["dockerfile"] == "docker/worker-cpu.Dockerfile"
    assert "CUDAExecutionProvider" not in str(env_of(worker))
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile(worker), re.M)


def duration_s(text: str) -> float:
    """A compose duration (``1m30s``, ``11m``, ``90s``) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(text))
    assert parts and any(parts.groups()), text
    hours, minutes, seconds = (float(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_workers_get_the_job_time_limit_to_finish_before_they_are_killed(name, monkeypatch):
    service = SERVICES[name]
    settings = settings_from({k: v for k, v in env_of(service).items() if k.startswith("SRGAN_")}, monkeypatch)
    assert duration_s(service["stop_grace_period"]) >= settings.time_limit_s
    assert duration_s("11m") == 660 and duration_s("1m30s") == 90


def test_worker_reserves_a_gpu_and_scales():
    worker = SERVICES["worker-gpu"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "container_name" not in worker and "ports" not in worker, "--scale worker=N needs neither"
    assert "--name" in worker["command"] and "%h" in worker["command"][-1], "one node name per container"
    hostname_in_check = worker["healthcheck"]["test"][-1]
    assert worker["command"][-1].replace("%h", "$$HOSTNAME") in hostname_in_check


def test_images_install_extras_that_exist():
    extras = PYPROJECT["project"]["optional-dependencies"]
    worker_file = dockerfile(SERVICES["worker-gpu"])
    assert re.search(r"^FROM nvidia/cuda:\S+-cudnn-runtime-", worker_file, re.M)
    assert 'pip install --no-deps ".[gpu,s3]"' in worker_file and "onnxruntime-gpu" in " ".join(extras["gpu"])
    cpu_file = dockerfile(SERVICES["worker"])
    assert 'pip install --no-deps ".[cpu,openvino,s3]"' in cpu_file
    api_file = dockerfile(SERVICES["api"])
    assert 'pip install --no-deps ".[s3]"' in api_file
    assert "onnxruntime" not in api_file, "the API image needs no ONNX Runtime"
    assert "boto3" in " ".join(extras["s3"])
    # the dependencies come from the lock files, hashes required; every image can reach S3 (boto3)
    assert "pip install --require-hashes -r requirements/worker-gpu.lock" in worker_file
    assert "pip install --require-hashes -r requirements/worker-cpu.lock" in cpu_file
    assert "pip install --require-hashes -r requirements/api.lock" in api_file
    locks = {name: (REPO / "requirements" / f"{name}.lock").read_text() for name in ("api", "worker-cpu", "worker-gpu")}
    assert "\nonnxruntime" not in locks["api"]
    assert "\nonnxruntime==" in locks["worker-cpu"] and "\nopenvino==" in locks["worker-cpu"]
    assert "\nonnxruntime-gpu==" not in locks["worker-cpu"] and "\ntensorflow" not in locks["worker-cpu"]
    assert "\nonnxruntime-gpu==" in locks["worker-gpu"]
    for name, lock in locks.items():
        assert "--hash=sha256:" in lock and "\nboto3==" in lock, name
    for name in ("api", "worker", "worker-gpu"):
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
    tag = re.search(r"^FROM tensorflow/tensorflow:(\S+)", text, re.M)
    tested = re.search(r"^tensorflow-cpu==(\S+)", (REPO / "requirements" / "ci.lock").read_text(), re.M)
    assert tag and tested and tag.group(1).split("-")[0] == tested.group(1), "the TensorFlow the tests run"
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


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu", "trainer"])
def test_the_build_context_leaves_out_data_and_secrets(name):
    service = SERVICES[name]
    ignore = REPO / service["build"]["context"] / (service["build"]["dockerfile"] + ".dockerignore")
    entries = {line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {"datasets", "data", "runs", ".env", ".git", ".venv", ".srgan"} <= entries, ignore.name
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile(service), re.M))
    assert not copied & entries, f"{name} copies what its ignore file leaves out"


# --- workers on other hosts (docs/deploy.md) -------------------------------------------
MAIN_HOST = yaml.safe_load((REPO / "docker" / "compose.main-host.yml").read_text())
WORKER_HOST = yaml.safe_load((REPO / "docker" / "compose.worker-host.yml").read_text())
MAIN_DOTENV = {**EXAMPLE_DOTENV, "SRGAN_REDIS_PASSWORD": "pw0123456789", "SRGAN_CLUSTER_ADDR": "10.8.0.1"}
WORKER_DOTENV = {"SRGAN_REDIS_URL": "redis://srgan:pw0123456789@10.8.0.1:6379/0",
                 "SRGAN_LINK_SECRET": "link" + "0123456789" * 3,
                 "SRGAN_S3_ENDPOINT_URL": "http://10.8.0.1:8333", "AWS_ACCESS_KEY_ID": "srgankey01",
                 "AWS_SECRET_ACCESS_KEY": "s3cr3t" * 6}


def merged_env(name: str, dotenv: dict[str, str]) -> dict[str, str]:
    """A service's environment with docker/compose.main-host.yml over docker-compose.yml (compose merges by key)."""
    return {**env_of(SERVICES[name], dotenv), **env_of(MAIN_HOST["services"].get(name, {}), dotenv)}


def test_the_main_host_publishes_redis_and_the_object_store_and_changes_nothing_else():
    services = MAIN_HOST["services"]
    assert set(services) == {"redis", "objectstore"}, "only ports: the password is docker-compose.yml's"
    assert all(set(service) == {"ports"} for service in services.values())
    assert [interpolate(p, MAIN_DOTENV) for p in services["redis"]["ports"]] == ["10.8.0.1:6379:6379"]
    s3_port = dict(a.lstrip("-").split("=", 1) for a in SERVICES["objectstore"]["command"][1:])["s3.port"]
    assert [interpolate(p, MAIN_DOTENV) for p in services["objectstore"]["ports"]] == [f"10.8.0.1:{s3_port}:{s3_port}"]
    with pytest.raises(LookupError, match="SRGAN_CLUSTER_ADDR"):
        interpolate(services["redis"]["ports"][0], EXAMPLE_DOTENV)


def test_redis_requires_the_password_from_dotenv_of_its_one_user_and_every_client_gives_it(monkeypatch):
    """The default user off; `srgan` with the password and no admin or dangerous commands (that the service
    runs with exactly these rules: tests/integration/service/test_production_redis.py)."""
    redis = SERVICES["redis"]
    command = [interpolate(a, MAIN_DOTENV) for a in redis["command"]]
    rules = command[command.index("--user"):]
    assert rules == ["--user", "default", "off", "--user", "srgan", "on", ">pw0123456789", "~*", "&*", "+@all",
                     "-@admin", "-@dangerous"]
    assert env_of(redis, MAIN_DOTENV)["REDISCLI_AUTH"] == "pw0123456789", "the health check's password"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "--user", "srgan", "ping"]
    assert "ports" not in redis, "not published on one box"
    with pytest.raises(LookupError, match="SRGAN_REDIS_PASSWORD"):
        env_of(SERVICES["api"], {k: v for k, v in MAIN_DOTENV.items() if k != "SRGAN_REDIS_PASSWORD"})
    for name in SERVICES:  # whatever uses SRGAN_REDIS_URL (or Flower's broker) gives the user and password
        env = merged_env(name, MAIN_DOTENV)
        for key in ("SRGAN_REDIS_URL", "CELERY_BROKER_URL"):
            if key in env:
                url = urlparse(env[key])
                assert (url.username, url.password, url.hostname) == ("srgan", "pw0123456789", "redis"), (name, key)
    settings = settings_from({k: v for k, v in merged_env("worker", MAIN_DOTENV).items() if k.startswith("SRGAN_")},
                             monkeypatch)
    assert settings.redis_url == "redis://srgan:pw0123456789@redis:6379/0"


@pytest.mark.parametrize("name", ["api", "worker", "webhooks"])
def test_the_link_secret_comes_from_dotenv_never_from_redis(name, monkeypatch):
    with pytest.raises(LookupError, match="SRGAN_LINK_SECRET"):
        env_of(SERVICES[name], {k: v for k, v in MAIN_DOTENV.items() if k != "SRGAN_LINK_SECRET"})
    env = {k: v for k, v in env_of(SERVICES[name], MAIN_DOTENV).items() if k.startswith("SRGAN_")}
    settings = settings_from(env, monkeypatch)
    assert settings.environment == "production" and settings.link_secret is not None
    with pytest.raises(ValueError, match="link_secret must be set in production"):
        settings_from({k: v for k, v in env.items() if k != "SRGAN_LINK_SECRET"}, monkeypatch)


def test_a_worker_host_runs_the_same_workers_against_the_main_hosts_redis_and_store(monkeypatch):
    services = WORKER_HOST["services"]
    assert set(services) == {"worker", "worker-gpu"}
    assert services["worker-gpu"]["profiles"] == ["gpu"] and "profiles" not in services["worker"]
    for name, service in services.items():
        main = SERVICES[name]
        for key in ("command", "healthcheck", "stop_grace_period", "image", "deploy"):
            assert service.get(key) == main.get(key), (name, key)
        assert service["build"]["dockerfile"] == main["build"]["dockerfile"]
        assert (REPO / "docker" / service["build"]["context"]).resolve() == REPO, "built from the repository root"
        env, main_env = env_of(service, WORKER_DOTENV), merged_env(name, MAIN_DOTENV)
        assert set(env) == set(main_env), name
        for key in set(env) - {"SRGAN_REDIS_URL", "SRGAN_S3_ENDPOINT_URL"}:
            assert env[key] == main_env[key], (name, key)
        assert env["SRGAN_REDIS_URL"] == WORKER_DOTENV["SRGAN_REDIS_URL"]
        settings = settings_from({k: v for k, v in env.items() if k.startswith("SRGAN_")}, monkeypatch)
        assert settings.s3_endpoint_url == WORKER_DOTENV["SRGAN_S3_ENDPOINT_URL"]
        assert "depends_on" not in service, "Redis and the store are on another host"
        assert mounts_of(service) == {"/models": "models"} and "models" in WORKER_HOST["volumes"]
    for missing in ("SRGAN_REDIS_URL", "SRGAN_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        with pytest.raises(LookupError, match=missing):
            env_of(services["worker"], {k: v for k, v in WORKER_DOTENV.items() if k != missing})


def test_the_documented_compose_commands_name_files_services_and_profiles_that_exist():
    files = {"docker-compose.yml": COMPOSE, "docker/compose.main-host.yml": MAIN_HOST,
             "docker/compose.worker-host.yml": WORKER_HOST}
    lines = re.findall(r"```sh\n(.*?)```", (REPO / "docs" / "deploy.md").read_text(), re.S)
    for name in files:  # and the usage comments at the top of each compose file
        lines += [ln.lstrip("# ") for ln in (REPO / name).read_text().splitlines() if ln.startswith("#")]
    commands = [re.split(r"\s{2,}|\(", ln[ln.index("docker compose"):])[0]
                for block in lines for ln in block.splitlines() if "docker compose" in ln]
    assert len(commands) >= 10
    for command in commands:
        args = shlex.split(command)
        named = [args[i + 1] for i, a in enumerate(args) if a == "-f"] or ["docker-compose.yml"]
        assert all(f in files for f in named), command
        services = {name: s for f in named for name, s in files[f]["services"].items()}
        for i, arg in enumerate(args):
            if arg == "--profile":
                assert any(args[i + 1] in s.get("profiles", []) for s in services.values()), command
            if arg == "--scale":
                assert args[i + 1].split("=")[0] in services, command


def test_the_api_serves_with_the_connection_deadlines_and_cap_in_compose_and_the_image(monkeypatch):
    """`srgan serve` in the image and in compose, with the deadlines against idle sockets and slow headers."""
    api = SERVICES["api"]
    assert api["command"][:2] == ["srgan", "serve"]
    assert dockerfile(api).rstrip().splitlines()[-1] == 'CMD ["srgan", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    for env in (env_of(api), dockerfile_env(dockerfile(api))):
        settings = settings_from({k: v for k, v in env.items() if k.startswith("SRGAN_")}, monkeypatch)
        assert settings.http_idle_timeout_s == 5 and settings.http_header_timeout_s == 10
        assert settings.http_max_connections == 1000


def test_the_trainer_needs_no_gpu_and_its_gpu_twin_is_in_the_gpu_profile():
    """The trainer image runs on the CPU: only the `gpu` profile's trainer reserves an NVIDIA device."""
    trainer, gpu = SERVICES["trainer"], SERVICES["trainer-gpu"]
    assert "deploy" not in trainer, "`docker compose --profile trainer run trainer` must not need the NVIDIA toolkit"
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert {k: v for k, v in gpu.items() if k not in ("profiles", "deploy")} == \
        {k: v for k, v in trainer.items() if k != "profiles"}, "the same trainer otherwise"
