"""Static checks of docker-compose.yml and the collector configs: no Docker engine runs here.

Reference data comes from ../shared/reference (or $HIS_OTEL_SHARED/reference): the compose spec's
JSON schema and the otelcol-contrib 0.159.0 component manifest. Without it the tests that need it
skip with the reason printed, and CI (which has it) fails on the skip. What runs the configs for
real is ``test_stack.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from binaries import SHARED

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = SHARED / "reference"
COMPOSE = ROOT / "docker-compose.yml"
CONFIGS = sorted((ROOT / "collector").glob("*.yaml"))
KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
# Collector >= 0.144 names the OTLP exporters otlp_grpc and otlp_http; their Go modules kept the
# old names (otlpexporter, otlphttpexporter). Every other type is its module name sans underscores.
RENAMED = {"otlp_grpc": "otlp", "otlp_http": "otlphttp"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(load(COMPOSE))


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def manifest_modules() -> dict[str, set[str]]:
    path = REFERENCE / "otelcol-contrib-0.159.0-manifest.yaml"
    if not path.exists():
        pytest.skip(f"{path} not present")
    manifest = load(path)
    return {kind: {m["gomod"].split()[0].rsplit("/", 1)[1] for m in manifest.get(kind, [])} for kind in KINDS}


def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    path = REFERENCE / "compose-spec.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    import json

    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.name)
def test_every_collector_component_exists_in_otelcol_contrib_0_159(config_path: Path) -> None:
    modules = manifest_modules()
    config = load(config_path)
    for kind in KINDS:
        for component_id in config.get(kind) or {}:
            ctype = component_type(component_id)
            module = RENAMED.get(ctype, ctype).replace("_", "") + kind[:-1]
            assert module in modules[kind], (
                f"{config_path.name}: {kind} {component_id!r} is not in otelcol-contrib"
            )


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.name)
def test_pipelines_use_exactly_the_defined_components(config_path: Path) -> None:
    config = load(config_path)
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for name, pipeline in config["service"]["pipelines"].items():
        assert name.split("/", 1)[0] in ("traces", "logs")
        for kind in ("receivers", "processors", "exporters"):
            used[kind].update(pipeline.get(kind, []))
        assert pipeline["processors"][0] == "memory_limiter", "memory_limiter must come first"
        assert component_type(pipeline["processors"][-1]) == "batch", "batch must come last"
    used["extensions"] = set(config["service"].get("extensions", []))
    for kind in ("receivers", "processors", "exporters", "extensions"):
        assert used[kind] == set(config.get(kind) or {}), f"{config_path.name}: {kind} defined vs used"


def test_main_config_sends_every_trace_to_jaeger_the_bridge_and_debug_and_the_live_copies_to_the_bridge() -> (
    None
):
    config = load(ROOT / "collector" / "config.yaml")
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs"}
    assert set(pipelines["traces"]["exporters"]) == {"otlp_grpc/jaeger", "otlp_http/his-bridge", "debug"}
    # Only his.milestone log events reach the bridge, batched briefly: the live copies.
    assert pipelines["logs"]["exporters"] == ["otlp_http/his-bridge"]
    assert pipelines["logs"]["processors"] == ["memory_limiter", "filter/his-logs", "batch/live"]
    assert config["processors"]["batch/live"]["timeout"] == "200ms"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    bridge = config["exporters"]["otlp_http/his-bridge"]
    assert bridge["compression"] == "gzip"
    assert bridge["retry_on_failure"]["max_elapsed_time"] == 0  # never drop a batch the bridge said to retry


def _service_and_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "://" in endpoint else f"tcp://{endpoint}")
    assert parts.hostname and parts.port, endpoint
    return parts.hostname, parts.port


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.name)
def test_collector_endpoints_point_at_compose_services(config_path: Path, compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = load(config_path)
    bridge_command = services["his-bridge"]["command"]
    assert _flag(bridge_command, "--host") == "0.0.0.0"  # reachable from the collector
    host, port = _service_and_port(config["exporters"]["otlp_grpc/jaeger"]["endpoint"])
    assert host == "jaeger" and host in services and port == 4317  # Jaeger v2's OTLP gRPC port
    if "otlp_http/his-bridge" in config["exporters"]:
        host, port = _service_and_port(config["exporters"]["otlp_http/his-bridge"]["endpoint"])
        assert host in services
        assert port == int(_flag(services[host]["command"], "--port"))
    else:  # scale-out: copies of the his-bridge service, on its gRPC port
        balancer = config["exporters"]["load_balancing/his-bridges"]
        # The live copies, by resource: the collector cannot route log records with their spans.
        assert balancer["routing_key"] == "resource"
        pipelines = config["service"]["pipelines"]
        assert pipelines["logs"]["exporters"] == ["load_balancing/his-bridges"]
        assert "load_balancing/his-bridges" not in pipelines["traces"]["exporters"]
        assert balancer["protocol"]["otlp"]["retry_on_failure"]["max_elapsed_time"] == 0
        for target in balancer["resolver"]["static"]["hostnames"]:
            host, port = _service_and_port(target)
            assert re.fullmatch(r"his-bridge-\d+", host) and port == int(_flag(bridge_command, "--grpc-port"))
    health = config["extensions"]["health_check"]["endpoint"]
    assert _service_and_port(health)[1] in _container_ports(services["otel-collector"])


def test_compose_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    collector = services["otel-collector"]
    # The mounted file exists in the repo and is the one the collector is told to read.
    (mount,) = collector["volumes"]
    source, target = mount.split(":")[:2]
    assert (ROOT / source).resolve() == ROOT / "collector" / "config.yaml"
    assert collector["command"] == [f"--config={target}"]
    assert {4317, 4318} <= _container_ports(collector)
    assert 16686 in _container_ports(services["jaeger"])
    # The bridge and the table creator talk to the DynamoDB service on the port it listens on.
    bridge = services["his-bridge"]
    host, port = _service_and_port(bridge["environment"]["AWS_ENDPOINT_URL_DYNAMODB"])
    assert host == "dynamodb" and port in _container_ports(services["dynamodb"])
    creator = services["create-table"]
    assert _service_and_port(_flag(creator["command"], "--endpoint")) == (host, port)
    # One table name everywhere, and it is the demo's default.
    from his_otel.demo import DEFAULT_DEMO_TABLE

    assert creator["command"][1] == _flag(bridge["command"], "--table") == DEFAULT_DEMO_TABLE
    # Start-up order with health conditions.
    assert collector["depends_on"]["his-bridge"]["condition"] == "service_healthy"
    assert bridge["depends_on"]["create-table"]["condition"] == "service_completed_successfully"
    # DynamoDB Local has no health check (its image's tools are unknown): the creator waits for it.
    assert creator["depends_on"]["dynamodb"]["condition"] == "service_started"
    assert float(_flag(creator["command"], "--wait")) >= 30
    assert "healthcheck" in bridge
    # The bridge's health check asks the port the bridge listens on.
    assert f":{_flag(bridge['command'], '--port')}/ready" in " ".join(bridge["healthcheck"]["test"])


def test_images_are_pinned_to_the_versions_the_tests_run(compose: dict[str, Any]) -> None:
    own = "his-otel:local"
    for name, service in compose["services"].items():
        image = service["image"]
        if image == own:
            continue  # built from this repository
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
    # test_stack.py runs the builds listed in ../shared/bin/MANIFEST.md: compose runs those versions.
    path = SHARED / "bin" / "MANIFEST.md"
    if not path.exists():
        pytest.skip(f"{path} not present")
    manifest = path.read_text()
    collector = re.search(r"`otelcol-his\.xz`.*?contrib v(\d+\.\d+\.\d+)", manifest)
    jaeger = re.search(r"`jaeger\.xz`.*?Jaeger v(\d+\.\d+\.\d+)", manifest)
    assert collector and jaeger
    assert compose["services"]["otel-collector"]["image"] == (
        f"otel/opentelemetry-collector-contrib:{collector.group(1)}"
    )
    assert (
        compose["services"]["jaeger"]["image"]
        == f"cr.jaegertracing.io/jaegertracing/jaeger:{jaeger.group(1)}"
    )


def test_the_his_otel_image_is_built_once(compose: dict[str, Any]) -> None:
    users = {name: s for name, s in compose["services"].items() if s["image"] == "his-otel:local"}
    builders = [name for name, s in users.items() if "build" in s]
    assert builders == ["create-table"]
    assert users["create-table"]["pull_policy"] == "build"  # never looked for on a registry
    for name, service in users.items():
        if name not in builders:
            assert service["pull_policy"] == "never", name
            assert "create-table" in service["depends_on"], name  # created after the build


def test_the_bridge_may_drain_before_docker_kills_it(compose: dict[str, Any]) -> None:
    from his_otel.bridge.server import DEFAULT_DRAIN_TIMEOUT_MS
    from his_otel.cli.main import EXIT_WATCHDOG_S

    grace = compose["services"]["his-bridge"]["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))  # type: ignore[union-attr]
    assert seconds > DEFAULT_DRAIN_TIMEOUT_MS / 1000 + EXIT_WATCHDOG_S


def test_no_jaeger_v1_settings(compose: dict[str, Any]) -> None:
    env = compose["services"]["jaeger"].get("environment") or {}
    assert "COLLECTOR_OTLP_ENABLED" not in env and "SPAN_STORAGE_TYPE" not in env


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["his-otel"]' in dockerfile
    assert "pip install --no-cache-dir ." in dockerfile
    for copied in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (ROOT / copied).exists(), copied


def test_compose_serves_the_session_page_beside_jaeger(compose: dict[str, Any]) -> None:
    from his_otel.cli.main import EXIT_WATCHDOG_S
    from his_otel.demo import DEFAULT_DEMO_TABLE
    from his_otel.serve.server import DEFAULT_PORT, DRAIN_S

    services = compose["services"]
    serve = services["his-serve"]
    assert serve["command"][0] == "serve" and _flag(serve["command"], "--table") == DEFAULT_DEMO_TABLE
    port = int(_flag(serve["command"], "--port"))
    # The demo finds the page on the default port, published on the host's loopback only.
    assert port == DEFAULT_PORT and f"127.0.0.1:{port}:{port}" in serve["ports"]
    host, db_port = _service_and_port(serve["environment"]["AWS_ENDPOINT_URL_DYNAMODB"])
    assert host == "dynamodb" and db_port in _container_ports(services["dynamodb"])
    # Each row's link opens the trace in the Jaeger UI this file publishes.
    assert _flag(serve["command"], "--trace-url") == "http://localhost:16686/trace/{trace_id}"
    assert "127.0.0.1:16686:16686" in services["jaeger"]["ports"]
    assert f":{port}/health" in " ".join(serve["healthcheck"]["test"])
    grace = int(re.fullmatch(r"(\d+)s", serve["stop_grace_period"]).group(1))  # type: ignore[union-attr]
    assert grace > DRAIN_S + EXIT_WATCHDOG_S
