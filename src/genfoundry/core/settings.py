"""Settings: defaults, then ``GENFOUNDRY_HOME/config.toml``, then environment
variables (``GENFOUNDRY_<NAME>``), then flags, each overriding the one before.

Example::

    settings = load_settings(overrides={"port": 9000})
    settings.database_url  # sqlite:////home/me/.genfoundry/genfoundry.db
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genfoundry.core.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "default_home", "load_settings"]

ENV_PREFIX = "GENFOUNDRY_"
CONFIG_FILE = "config.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Full-size sliding-window KV cache: without it llama-server re-processes more of the prompt
# and the first token comes ~25 ms later on Gemma 3 (the in-process engine keeps it full too).
# An 8-bit KV cache (needs flash attention) halves the memory that costs. No busy-polling
# (--poll 0): on a small machine the spinning threads steal the cores the gateway needs to
# relay tokens. Measured in docs/benchmarks.md.
DEFAULT_LLAMA_SERVER_ARGS = "--swa-full -fa on -ctk q8_0 -ctv q8_0 --poll 0"


def default_home() -> Path:
    return Path(os.environ.get("GENFOUNDRY_HOME", "~/.genfoundry")).expanduser()


class Settings(BaseModel):
    """Everything a user can set. Each field is documented in docs/settings.md."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    home: Path = Field(default_factory=default_home, description="Where genfoundry keeps its database, models and runs.")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the store; default SQLite in home. A postgresql+psycopg:// URL uses PostgreSQL.")
    host: str = Field(DEFAULT_HOST, description="Address the gateway listens on.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="Port the gateway listens on.")
    log_content: bool = Field(True, description="Record request and response content with every call (turn off to keep only metadata).")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Largest request body the gateway accepts, in bytes; larger bodies get 413.")
    llama_engine: Literal["auto", "server", "inprocess"] = Field("auto", description="How GGUF models run: 'server' drives llama.cpp's llama-server (continuous batching), 'inprocess' uses llama-cpp-python in the gateway, 'auto' uses the server when a llama-server binary is found.")
    llama_server_path: str | None = Field(None, description="Path of a llama-server binary; default: the one `genfoundry engine build` made, then PATH.")
    llama_server_args: str = Field(DEFAULT_LLAMA_SERVER_ARGS, description="Extra command-line arguments for llama-server engines, one shell-quoted string; the default keeps a full sliding-window cache (fast first token) with an 8-bit KV cache (half the memory).")
    llama_parallel: int = Field(8, ge=1, le=64, description="Sequences a llama-server engine decodes at once (its -np).")
    llama_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; default: all cores.")
    llama_context: int = Field(4096, ge=256, description="Context window per sequence for GGUF models (capped by the model's own).")
    max_queue: int = Field(64, ge=0, description="Requests that may wait for a local model beyond those running; more get 429 with Retry-After.")
    request_timeout: float = Field(300.0, gt=0, description="Seconds before a request to a provider is abandoned.")
    default_rpm: int | None = Field(None, ge=1, description="Requests per minute for keys that set no limit of their own (none: unlimited).")
    local_hourly_price: float = Field(0.10, ge=0, description="Dollars per hour this machine costs you (default: about an on-demand 2-vCPU cloud VM); built-in local models are priced from it and their measured throughput.")
    vector_store: str = Field("lance", description="Where chunks and vectors live: 'lance' (embedded LanceDB in home/vectors) or a postgresql:// URL of a server with the pgvector extension.")
    chunk_tokens: int = Field(200, ge=16, le=8192, description="Largest chunk, in tokens of the collection's embedding model, for new collections.")
    chunk_overlap: int = Field(40, ge=0, description="Tokens consecutive chunks of one section share, for new collections.")
    max_file_mb: float = Field(50.0, gt=0, description="Largest file `ingest` reads, in MiB; larger files are reported and skipped.")
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Ingest sends chunks to the embedding model in groups of about four times this (spanning small files) and writes each group to the vector store at once; the model's own batch_size option sets how many it encodes together.")
    ray_address: str | None = Field(None, description="Run ingestion's reading, chunking and embedding, and labeling functions, on Ray: 'local' starts a cluster on this machine, 'auto' joins the one running here, 'ray://HOST:10001' a remote one; unset: in this process (docs/knowledge.md).")
    ray_workers: int | None = Field(None, ge=1, le=1024, description="Ray workers (each holds the embedding model) for an ingest; default: one per CPU of the cluster.")
    min_relevance: float = Field(0.35, ge=-1, le=1, description="Cosine similarity the best retrieved chunk must reach; below it a grounded answer says the documents do not hold the answer instead of guessing.")
    reranker: str | None = Field(None, description="Re-ranks retrieved passages when a search or question asks for it: 'cross-encoder:/path/to/folder' (a sentence-transformers CrossEncoder) or 'model:NAME' (a chat model grades each passage); unset: re-ranking is off.")
    guard: bool = Field(True, description="Run the guard's rails (policy from guard_policy) on every chat, completion, embedding and grounded-answer request through the gateway.")
    guard_policy: Path | None = Field(None, description="YAML policy file for the guard's rails; unset: home/guard.yaml when it exists, else the built-in default policy (docs/guard.md).")
    vault_key_file: Path | None = Field(None, description="File holding the vault's 256-bit key (made by `genfoundry guard keygen`); the GENFOUNDRY_VAULT_KEY environment variable takes precedence; default home/vault.key.")
    tracing: bool = Field(True, description="Record a trace (OpenTelemetry spans) of every /v1 request in the store; `genfoundry traces` and the console show them.")
    trace_content: bool = Field(False, description="Put prompts and answers in spans (gen_ai.input.messages, gen_ai.output.messages), as the model saw them after the guard; off: spans hold only metadata.")
    otlp_endpoint: str | None = Field(None, description="Also export spans over OTLP/HTTP to this collector, e.g. http://localhost:4318 (Jaeger, Grafana Tempo, Phoenix, Langfuse); unset: traces stay local.")
    otlp_headers: str | None = Field(None, description="Headers for the OTLP exporter as key=value pairs separated by commas, e.g. an Authorization header for a hosted collector.")
    service_name: str = Field("genfoundry", description="service.name of the exported spans.")
    trace_retention_days: int = Field(30, ge=1, description="Spans older than this are deleted when the gateway starts.")
    budget_warn_fraction: float = Field(0.8, gt=0, le=1, description="Share of a key's dollar budget at which responses carry an X-Genfoundry-Budget-Warning header and a budget.warning alert is recorded.")
    api_docs: bool = Field(False, description="Serve Swagger UI at /docs and ReDoc at /redoc (they load their scripts from a CDN into the gateway's origin); /openapi.json is always served.")
    preload: str = Field("default,default-embedding", description="Models `serve` and `up` load and run once at start, comma-separated; /health answers 503 'starting' until they are warm, then 200. Empty: load models on first use.")
    tune_queue: bool = Field(True, description="The gateway trains fine-tuning jobs made through /v1/fine_tuning/jobs, one at a time, each in a worker process beside it; off: jobs wait until `genfoundry tune work JOB` runs them.")
    answer_cache: bool = Field(True, description="Keep grounded answers to repeat the same question on unchanged documents instantly; forgetting a document drops every cached answer that drew on it.")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'genfoundry.db'}"

    @property
    def preload_models(self) -> list[str]:
        return [name.strip() for name in self.preload.split(",") if name.strip()]

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def vectors_dir(self) -> Path:
        return self.home / "vectors"

    def ensure_home(self) -> None:
        """Make the home folders, readable by their owner only (keys, vault and call content live here)."""
        for sub in (self.home, self.models_dir, self.home / "runs"):
            fresh = not sub.exists()
            sub.mkdir(parents=True, exist_ok=True, mode=0o700)
            if fresh:
                os.chmod(sub, 0o700)  # mkdir's mode is cut by the umask


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file or remove it.") from exc


def _read_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    return values


def load_settings(
    *, home: Path | str | None = None, overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build settings from defaults, config.toml, environment and ``overrides``."""
    environ = dict(os.environ if environ is None else environ)
    home_path = Path(home).expanduser() if home else Path(
        environ.get("GENFOUNDRY_HOME", "~/.genfoundry")).expanduser()
    values: dict[str, Any] = {}
    values.update(_read_toml(home_path / CONFIG_FILE))
    values.update(_read_env(environ))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values["home"] = home_path
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid settings ({problems}); see docs/settings.md") from exc
