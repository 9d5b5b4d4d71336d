"""deploy/k8s, rendered as ``kubectl apply -k deploy/k8s`` would, checked without a cluster.

Every Kubernetes object is validated against the API server's schemas (kubernetes-validate, strict: an
unknown field is an error); KEDA's ScaledObjects against the schema of KEDA's CRD (vendored beside this
file), strict too. Then what a schema cannot know: the manifests agree with Settings, the `srgan` command
line, the API's routes and Host guard, and the Redis list Celery queues jobs on (tests/integration/service/
test_queue_autoscaling.py shows that list on a real Redis).
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from fastapi.routing import APIRoute

from api.middleware import _host_allowed
from api.routes.health import router as health_router
from cli.main import build_parser
from core.settings import Settings
from tests.utils.kustomize import build

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
DOCS = (REPO / "docs" / "deploy.md").read_text()
DOCS_ALL = build(K8S)
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
"""The oldest Kubernetes release still commonly run, and the newest whose schemas kubernetes-validate bundles."""

KEDA_REDIS_KEYS = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username",
                   "usernameFromEnv", "password", "passwordFromEnv", "listName", "listLength",
                   "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl"}
"""The metadata KEDA's `redis` scaler reads (keda.sh/docs/scalers/redis-lists); the CRD types it as any strings."""


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCS_ALL if d["kind"] == kind}


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as the API server does with ``--validate=strict``."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


KEDA_SCHEMA = strict(yaml.safe_load((Path(__file__).parent / "keda_scaledobject_v1alpha1.yaml").read_text()))
DEPLOYMENTS = objects("Deployment")
CONFIG = objects("ConfigMap")["srgan-config"]["data"]


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    import os

    for key in [k for k in os.environ if k.startswith("SRGAN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("SRGAN_"):
            monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def documented_secret() -> dict[str, str]:
    """The Secret docs/deploy.md tells to create: its name and keys, from its `kubectl create secret` line."""
    joined = re.sub(r"\\\n\s*", " ", DOCS)
    (line,) = [ln for ln in joined.splitlines() if "create secret generic" in ln]
    args = shlex.split(line.strip().strip("`"))
    name = args[args.index("generic") + 1]
    pairs = dict(a.split("=", 1)[1].split("=", 1) for a in args if a.startswith("--from-literal="))
    return {"name": name, **pairs}


@pytest.fixture(scope="module")
def settings() -> Settings:
    mp = pytest.MonkeyPatch()
    try:
        secret = documented_secret()
        return settings_of({**CONFIG, **{k: v for k, v in secret.items() if k != "name"}}, mp)
    finally:
        mp.undo()


# --- schemas ------------------------------------------------------------------------------
def test_the_kustomization_renders_the_whole_service():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in DOCS_ALL}
    assert {("Deployment", "srgan-api"), ("Service", "srgan-api"), ("Deployment", "srgan-worker-cpu"),
            ("Deployment", "srgan-worker-gpu"), ("Deployment", "srgan-webhooks"), ("StatefulSet", "srgan-redis"),
            ("Service", "srgan-redis"), ("ConfigMap", "srgan-config"), ("ScaledObject", "srgan-worker-cpu"),
            ("ScaledObject", "srgan-worker-gpu"), ("PodDisruptionBudget", "srgan-api"),
            ("PodDisruptionBudget", "srgan-worker-cpu"), ("PodDisruptionBudget", "srgan-worker-gpu")} <= kinds
    assert len(kinds) == len(DOCS_ALL), "no object twice"
    assert not [d for d in DOCS_ALL if d["kind"] == "Secret"], "secrets are created by hand, never shipped"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_kubernetes_object_matches_the_api_schema(version):
    checked = 0
    for doc in DOCS_ALL:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_the_validator_refuses_an_unknown_field_and_a_wrong_type(version):
    """The schema check can fail: a misspelt field and a string where a number goes are caught."""
    deployment = copy.deepcopy(DEPLOYMENTS["srgan-worker-cpu"])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 690
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)
    deployment = copy.deepcopy(DEPLOYMENTS["srgan-api"])
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


def test_scaled_objects_match_kedas_crd_schema():
    scaled = objects("ScaledObject")
    assert scaled
    for doc in scaled.values():
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.validate(doc, KEDA_SCHEMA)
    broken = copy.deepcopy(scaled["srgan-worker-cpu"])
    broken["spec"]["minReplicas"] = 1  # HPA's name, not KEDA's minReplicaCount
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KEDA_SCHEMA)
    broken = copy.deepcopy(scaled["srgan-worker-cpu"])
    broken["spec"]["triggers"][0]["metadata"]["listLength"] = 2  # metadata values are strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KEDA_SCHEMA)


# --- autoscaling on the queue -------------------------------------------------------------
def redis_triggers() -> list[tuple[str, dict[str, str]]]:
    found = []
    for name, doc in objects("ScaledObject").items():
        for trigger in doc["spec"]["triggers"]:
            assert trigger["type"] == "redis", name
            found.append((name, trigger["metadata"]))
    return found


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """What a Deployment's first container sees from ConfigMaps (envFrom) and its own env."""
    (container, *_) = deployment["spec"]["template"]["spec"]["containers"]
    configmaps = objects("ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def test_keda_watches_the_list_the_jobs_are_queued_on(settings):
    """Celery's Redis transport keeps a queue's messages in a list named after the queue; the API sends every
    job to ``settings.queue`` without a priority (kombu would use ``<queue>\\x06\\x16<priority>`` lists for
    others), and srgan_queue_depth is LLEN of that list (api.queue.JobQueue.depth)."""
    from api.queue import JobQueue

    triggers = redis_triggers()
    assert {name for name, _ in triggers} == {"srgan-worker-cpu", "srgan-worker-gpu"}
    queue = JobQueue(settings)
    try:
        assert queue.queue == settings.queue
    finally:
        queue.close()
    for name, meta in triggers:
        assert set(meta) <= KEDA_REDIS_KEYS, (name, set(meta) - KEDA_REDIS_KEYS)
        assert meta["listName"] == settings.queue, name
        assert int(meta["listLength"]) >= 1
        assert int(meta.get("activationListLength", "0")) >= 0


def test_keda_reads_the_redis_the_services_use(settings):
    url = urlparse(settings.redis_url)
    for name, meta in redis_triggers():
        target = DEPLOYMENTS[objects("ScaledObject")[name]["spec"]["scaleTargetRef"]["name"]]
        env = container_env(target)
        address = meta.get("address") or env[meta["addressFromEnv"]]  # KEDA resolves *FromEnv in the target
        assert address == f"{url.hostname}:{url.port or 6379}", name
        assert int(meta.get("databaseIndex", "0")) == int(url.path.strip("/") or 0), name
        assert meta.get("enableTLS", "false") == str(url.scheme == "rediss").lower()
    service = objects("Service")[url.hostname]
    assert [p["port"] for p in service["spec"]["ports"]] == [url.port or 6379], "the in-cluster Redis answers there"


def test_workers_scale_from_one_cpu_and_zero_gpu_workers():
    scaled = objects("ScaledObject")
    cpu, gpu = scaled["srgan-worker-cpu"]["spec"], scaled["srgan-worker-gpu"]["spec"]
    assert cpu["scaleTargetRef"]["name"] == "srgan-worker-cpu" and gpu["scaleTargetRef"]["name"] == "srgan-worker-gpu"
    # /readyz needs a live worker: with none, the API is out of its Service, no job arrives, nothing scales up
    assert cpu["minReplicaCount"] >= 1
    assert gpu["minReplicaCount"] == 0 and gpu["maxReplicaCount"] >= 1
    for name in ("srgan-worker-cpu", "srgan-worker-gpu"):
        assert "replicas" not in DEPLOYMENTS[name]["spec"], f"{name}: KEDA owns the replica count"


# --- workers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["srgan-worker-cpu", "srgan-worker-gpu"])
def test_workers_get_the_job_time_limit_to_stop(name, settings):
    pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= settings.time_limit_s
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["command"][1:])
    assert container["command"][0] == "srgan" and args.command == "worker" and not args.webhooks
    ping = container["livenessProbe"]["exec"]["command"]
    assert ping[:2] == ["sh", "-c"] and f"--destination {args.name.replace('%h', '$HOSTNAME')}" in ping[2]


def test_the_gpu_worker_asks_for_a_gpu_and_the_cpu_worker_does_not():
    gpu = DEPLOYMENTS["srgan-worker-gpu"]["spec"]["template"]["spec"]
    (container,) = gpu["containers"]
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu.get("tolerations", []))
    assert "CUDAExecutionProvider" in container_env(DEPLOYMENTS["srgan-worker-gpu"])["SRGAN_PROVIDERS"]
    (cpu,) = DEPLOYMENTS["srgan-worker-cpu"]["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in str(cpu["resources"])
    assert cpu["image"].endswith("worker-cpu:0.1.0") and container["image"].endswith("worker-gpu:0.1.0")


# --- the API ------------------------------------------------------------------------------------------
def test_the_api_probes_liveness_and_readiness_where_the_api_answers_them(settings):
    (container,) = DEPLOYMENTS["srgan-api"]["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["command"][1:])
    assert args.command == "serve"
    (port,) = container["ports"]
    assert port["containerPort"] == args.port
    routes = {route.path for route in health_router.routes if isinstance(route, APIRoute)}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in routes and probe["port"] in (port["name"], port["containerPort"])
        # the kubelet's Host is the pod's IP, which the Host allow-list refuses; the probes name localhost
        host = {h["name"]: h["value"] for h in probe.get("httpHeaders", [])}.get("Host", "10.1.2.3:8000")
        assert _host_allowed(host, settings.allowed_hosts)
    assert not _host_allowed("10.1.2.3:8000", settings.allowed_hosts), "why the probes need their Host header"
    from cli.serve import refuse_exposure

    assert refuse_exposure(args.host, settings, insecure=False) is None, "it starts without --insecure"


def test_the_service_and_the_disruption_budgets_select_pods_that_exist():
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in
            {**DEPLOYMENTS, **objects("StatefulSet")}.items()}

    def selects(selector: dict[str, str]) -> list[str]:
        return [name for name, labels in pods.items() if selector.items() <= labels.items()]

    for name, service in objects("Service").items():
        assert selects(service["spec"]["selector"]) == [name], name
    budgets = objects("PodDisruptionBudget")
    for name in ("srgan-api", "srgan-worker-cpu", "srgan-worker-gpu"):
        assert selects(budgets[name]["spec"]["selector"]["matchLabels"]) == [name]
    assert budgets["srgan-api"]["spec"]["minAvailable"] < DEPLOYMENTS["srgan-api"]["spec"]["replicas"], \
        "a node drain can still move an API pod"
    for name, deployment in {**DEPLOYMENTS, **objects("StatefulSet")}.items():
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pods[name].items(), name


# --- settings and secrets -------------------------------------------------------------------------
def test_the_configmap_holds_settings_and_the_documented_secret_the_rest(settings):
    fields = {f"SRGAN_{f.upper()}" for f in Settings.model_fields}
    unknown = sorted(k for k in CONFIG if k.startswith("SRGAN_") and k not in fields)
    assert not unknown, unknown
    assert settings.storage_url.startswith("s3://") and settings.environment == "production"
    assert settings.api_keys, "the documented secret's SRGAN_API_KEYS parses"
    secret = documented_secret()
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SRGAN_API_KEYS"} <= set(secret)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SRGAN_API_KEYS"} & set(CONFIG), "secrets stay secret"
    for name, deployment in DEPLOYMENTS.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if name == "srgan-proxy":  # nginx: a few values of srgan-config, never the secret
                refs = {e["valueFrom"]["configMapKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
                assert refs == {"srgan-config"} and "envFrom" not in container, name
                continue
            refs = {(k, v["name"]) for source in container["envFrom"] for k, v in source.items()}
            assert refs == {("configMapRef", "srgan-config"), ("secretRef", secret["name"])}, name


def test_pods_run_as_the_images_user_without_privileges():
    for name, workload in {**DEPLOYMENTS, **objects("StatefulSet")}.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], name
            assert context["readOnlyRootFilesystem"] is True, name
            mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if name == "srgan-proxy":
                assert {"/etc/nginx/conf.d", "/tmp"} <= mounted, f"{name}: the rendered template and nginx's files"
            elif name != "srgan-redis":
                assert {"/data", "/tmp"} <= mounted, f"{name}: writable data and temporary folders"
    for name in ("srgan-api", "srgan-worker-cpu", "srgan-worker-gpu", "srgan-webhooks"):
        assert DEPLOYMENTS[name]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001, \
            "the srgan user of docker/*.Dockerfile"


def test_images_are_the_ones_docker_builds():
    dockerfiles = {p.name.removesuffix(".Dockerfile") for p in (REPO / "docker").glob("*.Dockerfile")}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for rule in kustomization["images"]:
        assert rule["name"].removeprefix("srgan-") in dockerfiles, rule["name"]
    for doc in DOCS_ALL:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert ":" in container["image"] and not container["image"].endswith(":latest"), container["image"]


# --- Redis: password, ACL, network policy, the link secret ----------------------------------------
def test_redis_requires_the_secrets_password_of_the_same_acl_user_as_compose(settings):
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    (redis,) = objects("StatefulSet")["srgan-redis"]["spec"]["template"]["spec"]["containers"]
    args = redis["args"]
    assert args[args.index("--user"):] == [a.replace("${SRGAN_REDIS_PASSWORD}", "$(SRGAN_REDIS_PASSWORD)")
                                           for a in compose[compose.index("--user"):]]
    assert args[:args.index("--user")] == compose[:compose.index("--user")], "the same server otherwise"
    secret = documented_secret()
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    assert refs["SRGAN_REDIS_PASSWORD"] == refs["REDISCLI_AUTH"] == {"name": secret["name"],
                                                                      "key": "SRGAN_REDIS_PASSWORD"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert redis[probe]["exec"]["command"] == ["redis-cli", "--user", "srgan", "ping"]
    url = urlparse(settings.redis_url)  # the pods' URL, with the Secret's password put in by the settings
    assert (url.username, url.password) == ("srgan", secret["SRGAN_REDIS_PASSWORD"])
    assert "SRGAN_REDIS_PASSWORD" not in CONFIG and "@" in CONFIG["SRGAN_REDIS_URL"]
    assert ":" not in urlparse(CONFIG["SRGAN_REDIS_URL"]).netloc.split("@")[0], "no password in the ConfigMap"
    for name, meta in redis_triggers():  # KEDA logs in as the same user
        target = DEPLOYMENTS[objects("ScaledObject")[name]["spec"]["scaleTargetRef"]["name"]]
        assert container_env(target)[meta["usernameFromEnv"]] == url.username, name
        assert meta["passwordFromEnv"] == "SRGAN_REDIS_PASSWORD" and "SRGAN_REDIS_PASSWORD" in secret, name


def test_the_link_secret_comes_from_the_secret_never_from_redis(settings):
    assert settings.environment == "production" and settings.link_secret is not None
    assert "SRGAN_LINK_SECRET" in documented_secret() and "SRGAN_LINK_SECRET" not in CONFIG
    with pytest.raises(ValueError, match="link_secret must be set in production"):
        Settings(_env_file=None, environment="production", redis_url=settings.redis_url)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions In/NotIn/Exists) against labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def test_a_network_policy_lets_only_the_api_workers_webhooks_and_keda_reach_redis():
    (policy,) = objects("NetworkPolicy").values()
    spec = policy["spec"]
    pods = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in {**DEPLOYMENTS,
                                                                               **objects("StatefulSet")}.items()}
    assert [n for n, labels in pods.items() if selects(spec["podSelector"], labels)] == ["srgan-redis"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    same_namespace = [peer["podSelector"] for peer in rule["from"] if "namespaceSelector" not in peer]
    admitted = {n for n, labels in pods.items() if any(selects(s, labels) for s in same_namespace)}
    assert admitted == {"srgan-api", "srgan-worker-cpu", "srgan-worker-gpu", "srgan-webhooks"}
    others = [peer for peer in rule["from"] if "namespaceSelector" in peer]
    assert others == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
                       "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}}}]
    assert not any(selects(s, {"app.kubernetes.io/name": "srgan", "app.kubernetes.io/component": "debug"})
                   for s in same_namespace), "another pod of the app is refused"


def test_a_proxy_fronts_the_api_with_the_compose_template_and_the_apis_deadlines(settings):
    """nginx in front of the API, as in compose: the same template, the values of srgan-config."""
    (template,) = objects("ConfigMap")["srgan-proxy-template"]["data"].values()
    assert template == (REPO / "docker" / "nginx" / "srgan.conf.template").read_text(), "one template for both"
    proxy = DEPLOYMENTS["srgan-proxy"]["spec"]["template"]["spec"]
    (container,) = proxy["containers"]
    assert container["image"].startswith("nginxinc/nginx-unprivileged:")
    env = {e["name"]: e.get("value") or CONFIG[e["valueFrom"]["configMapKeyRef"]["key"]] for e in container["env"]}
    rendered = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], template)
    assert re.search(rf"client_header_timeout {settings.http_header_timeout_s:g}s;", rendered)
    assert re.search(rf"keepalive_timeout {settings.http_idle_timeout_s:g}s;", rendered)
    assert re.search(rf"client_body_timeout {settings.upload_idle_timeout_s:g}s;", rendered)
    assert re.search(rf"limit_conn srgan_all {settings.http_max_connections};", rendered)
    body = re.search(r"client_max_body_size (\d+)m;", rendered)
    assert body and int(body[1]) * 2**20 >= max(settings.max_batch_bytes, settings.max_upload_bytes)
    api = objects("Service")["srgan-api"]["spec"]["ports"][0]["port"]
    assert env["SRGAN_PROXY_UPSTREAM"] == f"srgan-api:{api}"
    listen = re.search(r"listen (\d+);", template)
    assert listen and container["ports"][0]["containerPort"] == int(listen[1])
    service = objects("Service")["srgan-proxy"]["spec"]
    assert service["selector"] == DEPLOYMENTS["srgan-proxy"]["spec"]["selector"]["matchLabels"]
