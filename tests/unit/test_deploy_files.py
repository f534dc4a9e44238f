"""The deployment recipes (deploy/ and docs/deployment.md) use only settings, routes and commands that exist.

Nothing here needs Docker, Helm or a cluster: the files are parsed and checked against the code
(the settings model, the gateway's routes, the command tree).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from starlette.routing import Match

from genfoundry.cli import app as cli_app
from genfoundry.core.settings import ENV_PREFIX, Settings, load_settings
from genfoundry.guard.keys import KEY_ENV

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "genfoundry"
DOC = ROOT / "docs" / "deployment.md"
CLI = typer.main.get_command(cli_app)

GATEWAYS = ("gateway-1", "gateway-2")
SERVICES = {"db", "llama", "otel-collector", "init", *GATEWAYS, "lb"}
# One-shot, or an image without a shell or HTTP client to run a check with (said in compose.yaml).
NO_HEALTHCHECK = {"init", "otel-collector"}


def _deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "models" not in p.parts
                  and "secrets" not in p.parts and p.name != ".env")


def _doc_code() -> str:
    """The fenced code blocks of docs/deployment.md (the prose may say 'genfoundry' freely)."""
    return "\n".join(re.findall(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", DOC.read_text(), flags=re.DOTALL | re.MULTILINE))


def _doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^[ \t]*```{language}\n(.*?)^[ \t]*```", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} / $$, as Compose would fill them (with a dummy)."""
    value = re.sub(r"\$\{(\w+):?-([^}]*)\}", r"\2", value)
    value = re.sub(r"\$\{(\w+)(:?\?[^}]*)?\}", "dummy", value)
    return value.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Whether the gateway answers METHOD PATH (built as the docs test builds it; never started)."""
    from genfoundry.gateway.app import create_app

    app = create_app(load_settings(home=tmp_path_factory.mktemp("home"), environ={}), builtins=False)

    def check(path: str, method: str = "GET") -> bool:
        scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": [],
                 "query_string": b""}
        return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)
    return check


# -- settings --------------------------------------------------------------------------------------

def _known_env_names() -> set[str]:
    """GENFOUNDRY_<FIELD> for every setting, the vault key variable, and the CLI's own env vars."""
    names = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    names.add(KEY_ENV)

    def walk(command):
        for param in command.params:
            envvars = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
            names.update(e for e in envvars if e)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)
    walk(CLI)
    return names


def test_every_genfoundry_variable_is_a_real_setting():
    pattern = re.compile(r"\bGENFOUNDRY_[A-Z0-9_]*[A-Z0-9]\b")
    known = _known_env_names()
    used: dict[str, set[str]] = {}
    for path in [*_deploy_files(), DOC]:
        for name in pattern.findall(path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert {"GENFOUNDRY_DATABASE_URL", "GENFOUNDRY_VECTOR_STORE", "GENFOUNDRY_VAULT_KEY_FILE",
            "GENFOUNDRY_OTLP_ENDPOINT"} <= set(used), "the recipes no longer name the settings they rely on"
    unknown = {name: sorted(files) for name, files in used.items() if name not in known}
    assert not unknown, f"not settings (see genfoundry.core.settings.Settings): {unknown}"


def test_the_gateways_settings_are_valid(compose, tmp_path):
    for name in ("init", *GATEWAYS):
        env = {k: _interpolate(str(v)) for k, v in compose["services"][name]["environment"].items()}
        settings = load_settings(home=tmp_path, environ=env)  # raises on a wrong name's value or type
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.vector_store.startswith("postgresql+psycopg://")
        assert settings.tune_queue is False


def test_the_charts_settings_are_real_and_valid(values, tmp_path):
    unknown = sorted(set(values["settings"]) - set(Settings.model_fields))
    assert not unknown, f"values.yaml settings that are not settings: {unknown}"
    # Only the Secret may carry these; a second source in the ConfigMap would be overridden silently.
    assert not {"database_url", "vector_store", "vault_key_file"} & set(values["settings"])
    env = {ENV_PREFIX + k.upper(): str(v).lower() if isinstance(v, bool) else str(v)
           for k, v in values["settings"].items() if v not in (None, "")}
    load_settings(home=tmp_path, environ=env)


# -- routes ----------------------------------------------------------------------------------------

_LOCAL_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost)(?::[^/'\"\s]+)?(/[\w/.-]*)")


def _healthcheck_text(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test", "")
    return " ".join(test) if isinstance(test, list) else str(test)


def test_health_checks_and_probes_use_real_routes(compose, values, served):
    used: list[tuple[str, str]] = []
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    healthcheck = [line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK")]
    assert healthcheck, "the image has no HEALTHCHECK"
    used += [("Dockerfile", p) for p in _LOCAL_URL.findall(healthcheck[0])]
    # The gateways' checks, and the load balancer's (it proxies to a gateway).
    for name in (*GATEWAYS, "lb"):
        used += [(f"compose {name}", p) for p in _LOCAL_URL.findall(_healthcheck_text(compose["services"][name]))]
    for probe, spec in values["probes"].items():
        used.append((f"values probes.{probe}", spec["path"]))
    nginx = (DEPLOY / "nginx.conf").read_text()
    used += [("nginx.conf", p) for p in re.findall(r"^\s*location\s+=?\s*(/\S+)\s*\{", nginx, re.MULTILINE) if p != "/"]
    paths = {p for _, p in used}
    assert {"/health/ready", "/health/live"} <= paths, used
    missing = [(where, p) for where, p in used if not served(p)]
    assert not missing, f"routes the gateway does not serve: {missing}"


def test_routes_named_in_the_guide_exist(served):
    text = DOC.read_text()
    named = re.findall(r"`(?:(GET|POST|DELETE) )?(/(?:health|metrics|console|admin|v1)[\w/{}.-]*)`", text)
    assert named
    missing = [f"{m or 'GET'} {p}" for m, p in named if not served(p, m or "GET")]
    assert not missing, f"docs/deployment.md names routes that do not exist: {missing}"


# -- commands --------------------------------------------------------------------------------------

# `genfoundry` followed by a command word: not part of a path, a URL, an image or a template name.
_PROGRAM = re.compile(r"(?<![\w./:@-])genfoundry(?=(?:[ \t]+|[\"']\s*,\s*[\"'])(?:--home[ \t=]|[a-z]))")
_COMMAND_POSITION = ("$", "&&", "||", ";", "|", "(", "[", "--", "-")
# `docker compose exec [-T] gateway-1 genfoundry ...`, `docker compose run --rm init genfoundry ...`
_IN_CONTAINER = re.compile(r"\b(?:exec|run)(?:\s+-\S+)*\s+[\w.-]+$")


def _invocations(text: str):
    """(argv, strict) for every genfoundry command in a text; strict when it sits where a program does."""
    text = text.replace("\\\n", " ")
    for line in text.splitlines():
        for m in _PROGRAM.finditer(line):
            before = line[:m.start()]
            if before.rstrip().endswith(('["', "['")):  # a flow list: ["genfoundry", "serve", ...]
                start, end = before.rfind("["), line.find("]", m.end())
                argv = yaml.safe_load(re.sub(r"\{\{.*?\}\}", "X", line[start:end + 1]))
                yield [str(a) for a in argv], True
                continue
            rest = re.sub(r"\{\{.*?\}\}", " X ", line[m.end():])
            rest = re.split(r"&&|\|\||;|\s\|\s|\)|\]|>|<|#|`", rest)[0]
            try:
                args = shlex.split(rest)
            except ValueError:
                args = rest.split()
            prefix = before.rstrip(" \t\"'")
            yield ["genfoundry", *args], (prefix == "" or prefix.endswith(_COMMAND_POSITION)
                                          or bool(_IN_CONTAINER.search(prefix)))


def _check(argv: list[str]) -> tuple[str, str | None]:
    """The command path, and what is wrong with the invocation (None when it is a real command)."""
    args = argv[1:]
    command = CLI
    path: list[str] = []
    root_options = {o for p in CLI.params for o in p.opts}
    while args and args[0].startswith("-"):
        option = args.pop(0).split("=")[0]
        if option not in root_options:
            return "", f"unknown option {option} of genfoundry"
        if "=" not in option and args:
            args.pop(0)
    while hasattr(command, "commands"):  # a group (typer's command classes are not always click's)
        if not args or args[0] not in command.commands:
            where = " ".join(["genfoundry", *path])
            return " ".join(path), f"{where}: no command {args[0] if args else '(none given)'!r}"
        path.append(args.pop(0))
        command = command.commands[path[-1]]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    unknown = [a.split("=")[0] for a in args if a.startswith("--") and a.split("=")[0] not in options]
    if unknown:
        return " ".join(path), f"genfoundry {' '.join(path)}: no option {unknown}"
    return " ".join(path), None


def test_every_genfoundry_command_exists():
    found: set[str] = set()
    problems: list[str] = []
    sources = [(str(p.relative_to(ROOT)), p.read_text()) for p in _deploy_files()]
    sources.append(("docs/deployment.md (code)", _doc_code()))
    for where, text in sources:
        for argv, strict in _invocations(text):
            if not strict and argv[1:2] and argv[1] not in CLI.commands:
                continue  # e.g. `helm install genfoundry deploy/...`, `kubectl -n genfoundry get ...`
            path, problem = _check(argv)
            if problem:
                problems.append(f"{where}: {' '.join(argv)}  ->  {problem}")
            else:
                found.add(path)
    assert not problems, "\n".join(problems)
    # The recipes rely on these; if none is found the extraction above is broken, not the files.
    assert {"serve", "models list", "models add", "models default", "keys create"} <= found, found


def test_model_arguments_in_the_chart_examples_are_options_of_models_add(values):
    add = CLI.commands["models"].commands["add"]
    options = {o for p in add.params for o in (*p.opts, *p.secondary_opts)}
    entries = list(values["models"]["register"])
    for block in _doc_blocks("yaml"):
        doc_values = yaml.safe_load(block)
        if isinstance(doc_values, dict) and "models" in doc_values:
            entries += doc_values["models"]["register"]
    assert entries, "no example of models.register to check"
    for entry in entries:
        assert {"name", "location"} <= set(entry)
        unknown = [a for a in entry.get("args", []) if a.startswith("--") and a not in options]
        assert not unknown, f"models.register {entry['name']}: not options of genfoundry models add: {unknown}"


# -- compose ---------------------------------------------------------------------------------------

def test_compose_has_the_services_with_health_checks_and_start_order(compose):
    services = compose["services"]
    assert SERVICES <= set(services), sorted(SERVICES - set(services))
    for name in SERVICES - NO_HEALTHCHECK:
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"

    def condition(name, on):
        return (services[name].get("depends_on") or {}).get(on, {}).get("condition")

    for gateway in GATEWAYS:
        assert condition(gateway, "db") == "service_healthy"
        assert condition(gateway, "llama") == "service_healthy"
        assert condition(gateway, "init") == "service_completed_successfully"
        assert condition("lb", gateway) == "service_healthy"
    assert condition("init", "db") == "service_healthy"
    assert condition("init", "llama") == "service_healthy"


def test_compose_images_and_mounted_files(compose):
    services = compose["services"]
    assert services["db"]["image"] == "pgvector/pgvector:pg16"
    assert services["llama"]["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib")
    assert services["lb"]["image"].startswith("nginx")
    assert any(v.startswith("./models:") for v in services["llama"]["volumes"])
    mounted = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if v.startswith("./")}
    assert {"./otel-collector.yaml", "./nginx.conf"} <= mounted
    for source in mounted - {"./models"}:
        assert (DEPLOY / source).is_file(), f"compose.yaml mounts {source}, which is not in deploy/"
    # One image for init and both gateways, built from this tree with deploy/Dockerfile.
    images = {services[n]["image"] for n in ("init", *GATEWAYS)}
    assert len(images) == 1
    build = services["gateway-1"]["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == DEPLOY / "Dockerfile"
    assert dockerfile.with_name(dockerfile.name + ".dockerignore").is_file()


def test_compose_gateways_share_the_database_the_key_and_the_home(compose):
    services = compose["services"]
    env = [services[n]["environment"] for n in GATEWAYS]
    assert env[0] == env[1] == services["init"]["environment"]
    env = env[0]
    for setting in ("GENFOUNDRY_DATABASE_URL", "GENFOUNDRY_VECTOR_STORE"):
        url = urlsplit(_interpolate(env[setting]))
        assert url.scheme == "postgresql+psycopg" and url.hostname == "db", env[setting]
    otlp = urlsplit(env["GENFOUNDRY_OTLP_ENDPOINT"])
    assert otlp.hostname == "otel-collector" and otlp.port == 4318
    # The vault key: a Compose secret every replica mounts, read through the vault_key_file setting.
    secret = Path(env["GENFOUNDRY_VAULT_KEY_FILE"])
    assert secret.parent == Path("/run/secrets") and secret.name in compose["secrets"]
    for name in GATEWAYS:
        assert secret.name in services[name]["secrets"]
    home = env["GENFOUNDRY_HOME"]
    homes = {v for n in GATEWAYS for v in services[n]["volumes"] if v.endswith(":" + home)}
    assert len(homes) == 1 and homes.pop().split(":")[0] in compose["volumes"]


def test_compose_registers_the_llama_server_it_runs(compose):
    services = compose["services"]
    llama = services["llama"]["command"]
    port, alias = llama[llama.index("--port") + 1], llama[llama.index("--alias") + 1]
    script = services["init"]["command"]
    script = script if isinstance(script, str) else " ".join(script)
    adds = [argv for argv, _ in _invocations(script) if argv[1:3] == ["models", "add"]]
    assert len(adds) == 1
    argv = adds[0]
    url = urlsplit(argv[4])
    assert (url.hostname, str(url.port), url.path) == ("llama", port, "/v1")
    assert argv[argv.index("--remote-model") + 1] == alias
    assert "--replace" in argv  # init runs again on every `up`


def test_nginx_balances_the_gateways_by_least_connections(compose):
    conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = re.findall(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, re.DOTALL)
    assert len(upstreams) == 1
    name, body = upstreams[0]
    assert re.search(r"^\s*least_conn;", body, re.MULTILINE)
    port = Settings.model_fields["port"].default
    servers = set(re.findall(r"^\s*server\s+(\S+)", body, re.MULTILINE))
    assert servers == {f"{g}:{port}" for g in GATEWAYS}
    assert f"proxy_pass http://{name};" in conf
    assert re.search(r"^\s*proxy_buffering off;", conf, re.MULTILINE)  # streamed answers


def test_the_collector_receives_otlp_http():
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    pipeline = config["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    assert set(pipeline["exporters"]) <= set(config["exporters"])
    assert set(pipeline.get("processors", [])) <= set(config.get("processors", {}))


# -- the image -------------------------------------------------------------------------------------

def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = text.replace("\\\n", " ").splitlines()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    home = re.search(r"GENFOUNDRY_HOME=(\S+)", text).group(1)
    assert re.search(rf'^VOLUME \["{re.escape(home)}"\]', text, re.MULTILINE)
    cmd = [line for line in lines if line.startswith("CMD ")]
    assert yaml.safe_load(cmd[-1].removeprefix("CMD ")) == ["genfoundry", "serve", "--host", "0.0.0.0"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    used = re.findall(r"\"\.\[([\w,]+)\]\"", text) + re.findall(r"^ARG EXTRAS=([\w,]+)$", text, re.MULTILINE)
    used += re.findall(r"EXTRAS=([\w,]+)\)", text)  # the extras the comments suggest
    assert used and all(e in extras for u in used for e in u.split(","))


def test_the_build_context_keeps_what_the_dockerfile_copies():
    ignored = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".venv", ".git", "deploy"} <= set(ignored)
    copies = [line.split()[1:-1] for line in (DEPLOY / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and "--from=" not in line]
    sources = [s for c in copies for s in c]
    assert "src" in sources or any(s.startswith("src") for s in sources)
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
        assert source.split("/")[0] not in ignored, f"{source} is copied but left out of the build context"


# -- the chart -------------------------------------------------------------------------------------

def test_chart_metadata(values):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "genfoundry"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version, "appVersion should be the genfoundry version the image holds"
    assert values["replicaCount"] >= 2


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir()) if p.is_file()}


def test_templates_refer_only_to_values_and_helpers_that_exist(values):
    templates = _templates()
    helpers = set(re.findall(r'\{\{-?\s*define\s+"([^"]+)"', templates["_helpers.tpl"]))
    problems = []
    for name, text in templates.items():
        for ref in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
            node = values
            for part in ref.split("."):
                if not isinstance(node, dict) or part not in node:
                    problems.append(f"{name}: .Values.{ref} is not in values.yaml")
                    break
                node = node[part]
        for helper in re.findall(r'include\s+"([^"]+)"', text):
            if helper not in helpers:
                problems.append(f"{name}: include {helper!r} is not defined in _helpers.tpl")
        opened = len(re.findall(r"\{\{-?\s*(?:if|range|with|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        if opened != closed:
            problems.append(f"{name}: {opened} blocks opened, {closed} ended")
    assert not problems, "\n".join(problems)


def _hook(text: str) -> tuple[set[str], int]:
    hooks = re.search(r'"helm\.sh/hook":\s*([\w,-]+)', text)
    weight = re.search(r'"helm\.sh/hook-weight":\s*"(-?\d+)"', text)
    return set(hooks.group(1).split(",")) if hooks else set(), int(weight.group(1)) if weight else 0


def test_migrations_run_once_as_a_hook_after_the_settings_exist():
    templates = _templates()
    job_hooks, job_weight = _hook(templates["migrate-job.yaml"])
    assert {"pre-install", "pre-upgrade"} <= job_hooks
    assert "kind: Job" in templates["migrate-job.yaml"]
    # What the Job reads must exist before it runs on a first install: hooks of a lower weight.
    for needed in ("secret.yaml", "configmap.yaml"):
        hooks, weight = _hook(templates[needed])
        assert {"pre-install", "pre-upgrade"} <= hooks and weight < job_weight, needed


def test_the_deployment_probes_and_runs_the_gateway():
    text = _templates()["deployment.yaml"]
    assert "readinessProbe:" in text and "livenessProbe:" in text
    assert ".Values.probes.readiness.path" in text and ".Values.probes.liveness.path" in text
    assert "maxUnavailable: 0" in text
    assert "GENFOUNDRY_VAULT_KEY_FILE" in text
    for optional in ("ingress.yaml", "hpa.yaml"):
        assert re.match(r"\{\{-?\s*if \.Values\.\w+\.enabled", _templates()[optional]), optional


def test_the_guides_values_example_uses_keys_the_chart_has(values):
    def check(example, schema, where=""):
        for key, value in example.items():
            assert isinstance(schema, dict) and key in schema, f"values.yaml has no {where}{key}"
            # Free-form maps (settings, annotations) and lists take anything; below that, nothing to check.
            if isinstance(value, dict) and isinstance(schema[key], dict) and schema[key] and key != "settings":
                check(value, schema[key], f"{where}{key}.")
    examples = [yaml.safe_load(b) for b in _doc_blocks("yaml")]
    examples = [e for e in examples if isinstance(e, dict) and "image" in e]
    assert examples, "docs/deployment.md has no values example"
    for example in examples:
        check(example, values)


def test_readme_links_the_guide():
    assert "[docs/deployment.md](docs/deployment.md)" in (ROOT / "README.md").read_text()
