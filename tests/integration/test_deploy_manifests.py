"""The deployment files, checked by the parsers of the tools that run them (no Docker engine or
cluster needed): docker-compose.yml by compose-go (what `docker compose` loads it with), the
Dockerfile by BuildKit's front end in lint mode (`docker build --check`), deploy/k8s/ rendered by
the kustomize library of `kubectl apply -k` and validated against the Kubernetes JSON schemas and
Strimzi's own CRDs, and the Prometheus configs by promtool. On top of that, what ties the files to
the code: settings that load, topics as streams/topics.py makes them, ports, labels and secrets.

The Go validator (deploy/validate/) is built here from the Go module proxy into .streams/go; the
Strimzi CRDs come from Maven Central (deploy/validate/strimzi/pom.xml) into .streams/validate.
Nothing is skipped: a missing tool fails the test with the reason."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from streams.settings import Settings, load_settings
from streams.topics import project_topics
from streams.versions import names_of

ROOT = Path(__file__).resolve().parents[2]
VALIDATE_DIR = ROOT / "deploy" / "validate"
K8S_DIR = ROOT / "deploy" / "k8s"
CACHE = ROOT / ".streams"
# The oldest Kubernetes still commonly run, and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.29", kv_utils.latest_version())
STRIMZI_CRDS = {"KafkaTopic": "043-Crd-kafkatopic.yaml", "KafkaUser": "044-Crd-kafkauser.yaml"}
# Keys of the Secrets Strimzi writes: the User Operator's per user, the Cluster Operator's cluster CA.
STRIMZI_SECRET_KEYS = {
    "streams-worker": {"password", "sasl.jaas.config"},
    "streams-cluster-ca-cert": {"ca.crt"},
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SERVICES = {"kafka", "cassandra", "worker", "producer", "prometheus", "grafana"}


# ---- tools -------------------------------------------------------------------------------------


def run(argv: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}", pytrace=False)
    return result


def tool(name: str, *fallbacks: str, hint: str) -> str:
    found = shutil.which(name) or next((f for f in fallbacks if Path(f).is_file()), None)
    if found is None:
        pytest.fail(f"`{name}` is needed to check the deployment files: {hint}", pytrace=False)
    return found


@pytest.fixture(scope="module")
def validator() -> Path:
    """deploy/validate built with the pinned modules of its go.sum, in a project-local Go cache."""
    go = tool("go", "/usr/local/go/bin/go", hint="install Go 1.24 or newer")
    binary = CACHE / "go" / "bin" / "streams-validate"
    env = {
        **os.environ,
        "GOPATH": str(CACHE / "go"),
        "GOMODCACHE": str(CACHE / "go" / "mod"),
        "GOCACHE": str(CACHE / "go" / "cache"),
        "GOFLAGS": "-mod=readonly -modcacherw -buildvcs=false",
        "GOTOOLCHAIN": "local",
        # go.sum pins every module; the checksum database is not reachable from every machine.
        "GOSUMDB": "off",
        "CGO_ENABLED": "0",
    }
    run(
        [go, "build", "-o", str(binary), "."],
        "building deploy/validate",
        cwd=VALIDATE_DIR,
        env=env,
        timeout=600,
    )
    return binary


@pytest.fixture(scope="module")
def promtool() -> str:
    return tool("promtool", hint="`make deps` installs it (Debian's prometheus package)")


@pytest.fixture(scope="module")
def strimzi_crds() -> dict[str, dict[str, Any]]:
    """Strimzi's CustomResourceDefinitions by kind, from the io.strimzi:api test jar on Maven Central."""
    pom = VALIDATE_DIR / "strimzi" / "pom.xml"
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(pom).getroot().findtext("m:properties/m:strimzi.version", namespaces=namespace)
    dest = CACHE / "validate" / f"strimzi-{version}"
    jar = dest / f"api-{version}-tests.jar"
    if not jar.is_file():
        mvn = tool("mvn", hint="`make deps` installs Maven")
        argv = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={dest}"]
        run(argv, "fetching Strimzi's CRDs with Maven", timeout=600)
    with zipfile.ZipFile(jar) as archive:
        # crds/v1beta2/ holds the CRDs that serve every API version of a kind (v1 among them).
        return {
            kind: yaml.safe_load(archive.read(f"crds/v1beta2/{name}")) for kind, name in STRIMZI_CRDS.items()
        }


# ---- docker-compose.yml ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose(validator: Path) -> dict[str, Any]:
    """The project as compose-go loads it (schema, interpolation with the defaults, references)."""
    result = run([str(validator), "compose", str(ROOT / "docker-compose.yml")], "loading docker-compose.yml")
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def test_compose_has_every_service_with_a_healthcheck_and_persistent_data(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name in SERVICES - {"producer"}:
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["cassandra"]["image"].startswith("cassandra:5.0")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert "cqlsh" in " ".join(services["cassandra"]["healthcheck"]["test"])
    assert "/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert "/metrics" in " ".join(services["worker"]["healthcheck"]["test"])
    for name, target in [
        ("kafka", "/var/lib/kafka/data"),
        ("cassandra", "/var/lib/cassandra"),
        ("prometheus", "/prometheus"),
        ("grafana", "/var/lib/grafana"),
    ]:
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        assert mounts[target]["type"] == "volume", name
        assert mounts[target]["source"] in compose["volumes"], name


def test_compose_starts_services_in_order_of_health(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def waits_for(name: str) -> dict[str, str]:
        return {dep: cfg["condition"] for dep, cfg in services[name].get("depends_on", {}).items()}

    assert waits_for("worker") == {"kafka": "service_healthy", "cassandra": "service_healthy"}
    # Topic auto-creation is off: the producer starts once the workers have created the topics.
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert waits_for("producer") == {"kafka": "service_healthy", "worker": "service_healthy"}
    assert waits_for("grafana") == {"prometheus": "service_healthy"}


def test_compose_workers_are_replicas_of_one_group_reachable_by_prometheus(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["build"]["context"] == str(ROOT)
    assert Path(worker["build"]["context"], worker["build"].get("dockerfile", "Dockerfile")).is_file()
    assert worker["command"] == ["worker"]
    settings = settings_from(worker["environment"])
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.cassandra.hosts == ("cassandra",)
    assert settings.worker.metrics_host == "0.0.0.0"
    replicas = worker["deploy"]["replicas"]
    assert 2 <= replicas <= settings.kafka.partitions, "replicas beyond the partition count sit idle"
    assert (
        str(settings.kafka.partitions) == compose["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]
    )
    assert str(settings.worker.metrics_port) in worker["expose"]
    assert not worker.get("ports"), "replicas cannot share a host port"
    producer = compose["services"]["producer"]
    assert producer["command"][:2] == ["produce", "clickstream"]
    assert settings_from(producer["environment"]).kafka.bootstrap == "kafka:9092"


def test_compose_prometheus_scrapes_every_worker_with_the_rules(
    compose: dict[str, Any], promtool: str
) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {Path(v["source"]): v["target"] for v in prometheus["volumes"] if v["type"] == "bind"}
    config_file = ROOT / "deploy" / "compose" / "prometheus.yml"
    run([promtool, "check", "config", str(config_file)], "promtool check config")
    assert mounts[config_file] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    rules_target = mounts[ROOT / "deploy" / "prometheus" / "rules"]
    assert config["rule_files"] == [f"{rules_target}/*.yml"]
    assert list((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")), "no rules to load"
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "streams-worker")
    worker = settings_from(compose["services"]["worker"]["environment"])
    assert job["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": worker.worker.metrics_port, "refresh_interval": "15s"}
    ]
    # The rules and dashboards select on the target label pipeline_version.
    version_label = next(r for r in job["relabel_configs"] if r["target_label"] == "pipeline_version")
    assert version_label["replacement"] == worker.worker.pipeline_version


def test_compose_grafana_provisions_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    mounts = {Path(v["source"]): v["target"] for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert mounts[provisioning] == "/etc/grafana/provisioning"
    assert mounts[ROOT / "deploy" / "grafana" / "dashboards"] == env["STREAMS_GRAFANA_DASHBOARDS"]
    assert list((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")), "no dashboards to load"
    # Grafana expands $NAME and ${NAME} in the values of provisioning files ($$ is a literal $).
    referenced = {
        name
        for path in provisioning.rglob("*.y*ml")
        for value in strings(yaml.safe_load(path.read_text()))
        for name in re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", value)
    }
    assert referenced <= set(env), f"Grafana's provisioning reads unset variables: {referenced - set(env)}"
    assert env["STREAMS_PROMETHEUS_URL"] == "http://prometheus:9090"


BROKEN_COMPOSE = {
    "unknown attribute": "services:\n  a:\n    image: x\n    restart_policy: always\n",
    "undefined dependency": "services:\n  a:\n    image: x\n    depends_on: [b]\n",
    "health of a service without healthcheck": (
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_healthy}\n"
        "  b:\n    image: y\n"
    ),
    "undefined volume": "services:\n  a:\n    image: x\n    volumes: [data:/data]\n",
    "bind mount of a missing path": "services:\n  a:\n    image: x\n    volumes: [./missing:/data]\n",
    "unset variable": "services:\n  a:\n    image: ${UNSET_IMAGE}\n",
    "replicas with a fixed host port": (
        "services:\n  a:\n    image: x\n    ports: ['8080:80']\n    deploy: {replicas: 2}\n"
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_COMPOSE))
def test_the_compose_validator_rejects_what_compose_would(validator: Path, tmp_path: Path, case: str) -> None:
    path = tmp_path / "compose.yml"
    path.write_text("name: broken\n" + BROKEN_COMPOSE[case])
    result = subprocess.run(
        [str(validator), "compose", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("streams-validate: error:")


# ---- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_passes_buildkit_checks_and_ships_what_workers_read(
    validator: Path, tmp_path: Path
) -> None:
    run([str(validator), "dockerfile", str(ROOT / "Dockerfile")], "docker build --check (BuildKit lint)")
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:3.11-slim\nCOPY --frm=build /x /y\n")
    assert subprocess.run([str(validator), "dockerfile", str(broken)], capture_output=True).returncode == 1

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert "pip wheel --wheel-dir /wheels ." in dockerfile
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, re.MULTILINE)[-1]
    copied = {
        Path(src)
        for src, dest in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.MULTILINE)
        if dest.startswith("./")
    }
    # The runtime files the default settings point at, relative to the checkout (the image's WORKDIR).
    defaults = Settings()
    needed = [
        defaults.deploy_dir / "cassandra" / "schema", defaults.ctr.prior_file, defaults.fraud.model_file,
        defaults.fraud.ip_countries_file, defaults.schemas_dir,
    ]  # fmt: skip
    for path in needed:
        relative = path.relative_to(ROOT)
        assert any(relative == c or c in relative.parents for c in copied), f"{relative} is not in {workdir}"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & {"deploy", "schemas", "streams", "pyproject.toml", "README.md"}


# ---- deploy/k8s --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests(validator: Path) -> list[dict[str, Any]]:
    """deploy/k8s as `kubectl apply -k` would send it."""
    rendered = run([str(validator), "kustomize", str(K8S_DIR)], "kustomize build deploy/k8s").stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.fixture(scope="module")
def secret_template() -> dict[str, Any]:
    """secret.template.yaml filled as the README says (envsubst), with placeholder values."""
    text = Template((K8S_DIR / "secret.template.yaml").read_text())
    secret: dict[str, Any] = yaml.safe_load(
        text.substitute(CASSANDRA_USERNAME="streams", CASSANDRA_PASSWORD="placeholder")
    )
    return secret


def one(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in manifests if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_core_manifests_match_the_kubernetes_schemas(
    manifests: list[dict[str, Any]], secret_template: dict[str, Any]
) -> None:
    core = [d for d in manifests if not d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {d["kind"] for d in core} == {
        "Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
    }  # fmt: skip
    problems = [
        f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {problem}"
        for doc in [*core, secret_template]
        for version in K8S_VERSIONS
        if (problem := kubernetes_problem(doc, version))
    ]
    assert not problems, "\n".join(problems)
    for doc in [*manifests, secret_template]:
        assert DNS_SUBDOMAIN.match(doc["metadata"]["name"]), doc["metadata"]["name"]
        assert doc["metadata"].get("namespace", "streams") == "streams"


def test_strimzi_resources_match_strimzis_crds(
    manifests: list[dict[str, Any]], strimzi_crds: dict[str, dict[str, Any]]
) -> None:
    custom = [d for d in manifests if d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {d["kind"] for d in custom} == set(STRIMZI_CRDS)
    for doc in custom:
        crd = strimzi_crds[doc["kind"]]
        served = {v["name"]: v for v in crd["spec"]["versions"] if v["served"]}
        version = doc["apiVersion"].split("/")[1]
        # Also as v1beta2, the version of Strimzi releases before 0.49 (only the apiVersion differs).
        for name in sorted({version, "v1beta2"}):
            assert name in served, f"{doc['kind']} {name} is not served by Strimzi's CRD"
            schema = closed_world(served[name]["schema"]["openAPIV3Schema"])
            errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
            assert not errors, f"{doc['kind']}/{doc['metadata']['name']} ({name}): " + "; ".join(
                f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
            )
        # The CRDs leave metadata open: check it as the API server would, as an ObjectMeta.
        as_object_meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        problem = kubernetes_problem(as_object_meta, K8S_VERSIONS[-1])
        assert problem is None, f"{doc['kind']}/{doc['metadata']['name']} metadata: {problem}"
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "streams"


def test_kafka_topics_are_the_topics_the_code_creates(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    settings = worker_settings(manifests, tmp_path)
    expected = {t.name: t for t in project_topics(settings)}
    topics = {d.get("spec", {}).get("topicName", d["metadata"]["name"]): d["spec"] for d in manifests
              if d["kind"] == "KafkaTopic"}  # fmt: skip
    assert set(topics) == set(expected)
    for name, spec in topics.items():
        assert spec["partitions"] == settings.kafka.partitions, name
        assert spec["replicas"] == settings.kafka.replication_factor, name
        config = {key: str(value) for key, value in spec["config"].items()}
        assert config.items() >= expected[name].config.items(), name
    assert topics[settings.topics.ad_events]["config"]["retention.ms"] == -1
    assert topics[settings.topics.dead_letters]["config"]["retention.ms"] == -1


def test_kafka_user_may_use_every_topic_and_group_of_the_version(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    settings = worker_settings(manifests, tmp_path)
    user = one(manifests, "KafkaUser")
    assert user["metadata"]["name"] == settings.kafka.sasl_username
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert user["spec"]["authentication"]["type"] == settings.kafka.sasl_mechanism.lower()
    acls = user["spec"]["authorization"]["acls"]

    def allowed(kind: str, name: str) -> set[str]:
        return {
            op for acl in acls
            if acl["resource"]["type"] == kind and acl.get("type", "allow") == "allow"
            and (name == acl["resource"]["name"] if acl["resource"].get("patternType", "literal") == "literal"
                 else name.startswith(acl["resource"]["name"]))
            for op in acl["operations"]
        }  # fmt: skip

    t, version = settings.topics, settings.worker.pipeline_version
    for topic in (t.ad_events, t.transactions, t.labels, t.smoke):
        assert {"Read", "Describe"} <= allowed("topic", topic) or "All" in allowed("topic", topic), topic
    results = (
        f"{t.ctr_results}.{version}",
        f"{t.fraud_scores}.{version}",
        f"{t.fraud_chain_heads}.{version}",
    )
    for topic in (t.dead_letters, *results):
        assert {"Write", "Describe"} <= allowed("topic", topic), topic
    app = f"{settings.worker.app_id}-{version}"
    assert "All" in allowed("topic", f"{app}-__assignor-__leader"), "Faust's internal topics"
    for group in names_of(settings, version, settings.worker.pipelines).groups:  # the engine's one group
        assert {"Read", "Describe"} <= allowed("group", group), group


def test_workers_scale_with_partitions_and_are_probed_on_metrics(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    settings = worker_settings(manifests, tmp_path)
    deployment = one(manifests, "Deployment", "streams-worker")
    assert 1 <= deployment["spec"]["replicas"] <= settings.kafka.partitions, "replicas beyond partitions idle"
    pod = deployment["spec"]["template"]
    container = one_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.worker.metrics_port
    assert settings.worker.metrics_host == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert container["image"] == "registry.example.com/streams:0.1.0"
    assert container["args"] == ["worker"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.worker.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert pod["metadata"]["labels"]["pipeline_version"] == settings.worker.pipeline_version
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    service = one(manifests, "Service", "streams-worker")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector


def test_workers_read_credentials_from_mounted_secrets(
    manifests: list[dict[str, Any]], secret_template: dict[str, Any]
) -> None:
    deployment = one(manifests, "Deployment", "streams-worker")
    container = one_container(deployment)
    keys = {**STRIMZI_SECRET_KEYS, secret_template["metadata"]["name"]: set(secret_template["stringData"])}
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            assert {item["key"] for item in volume["secret"]["items"]} <= keys[name], name
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in keys[ref["name"]], env["name"]
    config = one(manifests, "ConfigMap", "streams-settings")["data"]
    assert not [k for k in config if k.endswith(("PASSWORD", "__USERNAME"))], "credentials in the ConfigMap"


def test_k8s_scrape_config_keeps_the_labels_rules_select_on(
    manifests: list[dict[str, Any]], promtool: str, tmp_path: Path
) -> None:
    source = K8S_DIR / "prometheus" / "scrape-configs.yml"
    config = yaml.safe_load(source.read_text())
    job = one_job(config, "streams-worker")
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["streams"]
    relabel = {r.get("target_label"): r for r in job["relabel_configs"]}
    assert relabel["pipeline_version"]["source_labels"] == ["__meta_kubernetes_pod_label_pipeline_version"]
    # Debian's promtool is built without Kubernetes discovery: check the rest with a static target.
    checked = copy.deepcopy(config)
    del one_job(checked, "streams-worker")["kubernetes_sd_configs"]
    one_job(checked, "streams-worker")["static_configs"] = [{"targets": ["10.0.0.1:9400"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(checked))
    run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], "promtool check config")
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    keep = relabel_keep(job, "__meta_kubernetes_pod_label_app_kubernetes_io_component")
    assert re.fullmatch(keep, pod_labels["app.kubernetes.io/component"])


# ---- helpers -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_streams_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings here come from the files under test only."""
    for key in list(os.environ):
        if key.startswith("STREAMS_"):
            monkeypatch.delenv(key)
    yield


def settings_from(env: dict[str, str]) -> Settings:
    """Load the settings from a service's environment, as the worker's main() does; every
    STREAMS_ variable must name a real setting (a typo would otherwise be ignored)."""
    groups = Settings.model_fields
    for key in env:
        if key.startswith("STREAMS_"):
            group, _, field = key.removeprefix("STREAMS_").lower().partition("__")
            assert group in groups, f"{key}: no settings group {group!r}"
            annotation = groups[group].annotation
            assert annotation is not None and field in annotation.model_fields, f"{key}: no such setting"
    saved = dict(os.environ)
    try:
        os.environ.update({k: str(v) for k, v in env.items() if k.startswith("STREAMS_")})
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def one_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def worker_settings(manifests: list[dict[str, Any]], tmp_path: Path) -> Settings:
    """The worker pod's settings: its ConfigMap and env, with every file setting (mounted secrets)
    pointing into a volume mount of the pod; placeholder files stand in for the secrets."""
    deployment = one(manifests, "Deployment", "streams-worker")
    container = one_container(deployment)
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env |= one(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", "placeholder")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    for key, value in env.items():
        if not key.endswith("_FILE"):
            continue
        mount = next((m for m in mounts if value.startswith(m + "/")), None)
        assert mount is not None, f"{key}={value} is not in a mounted volume"
        item = value.removeprefix(mount + "/")
        assert item in {i["path"] for i in mounts[mount]["secret"]["items"]}, f"{key}: {item} is not mounted"
        placeholder = tmp_path / "mounts" / mount.strip("/") / item
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.write_text("placeholder\n")
        env[key] = str(placeholder)
    return settings_from(env)


def kubernetes_problem(doc: dict[str, Any], version: str) -> str | None:
    """Why ``doc`` does not match the (strict) JSON schema of its kind in Kubernetes ``version``."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except jsonschema.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    return None


def closed_world(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it with field validation Strict:
    unknown fields are errors, except where the schema preserves them."""
    if isinstance(schema, list):
        return [closed_world(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed_world(value) for key, value in schema.items() if key != "properties"}
    if isinstance(schema.get("properties"), dict):
        result["properties"] = {name: closed_world(sub) for name, sub in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            result["additionalProperties"] = False
    return result


def one_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    job: dict[str, Any] = next(j for j in config["scrape_configs"] if j["job_name"] == name)
    return job


def relabel_keep(job: dict[str, Any], source: str) -> str:
    rule = next(
        r for r in job["relabel_configs"] if r.get("action") == "keep" and r["source_labels"] == [source]
    )
    regex: str = rule["regex"]
    return regex
