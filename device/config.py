"""Agent configuration: a TOML file plus ``EDGELOOP_`` environment variables (which win).

Nested fields use ``__`` in the environment, e.g. ``EDGELOOP_BROKER__PASSWORD``. Secrets belong
in the environment, not in the file. A bad config fails at start-up with the field named.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from device.engine.runtimes import registry
from device.engine.runtimes.base import RuntimeConfig
from device.engine.runtimes.registry import AutoConfig
from device.serving.config import InferenceConfig
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings
from shared.protocol import Id

_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("edgeloop_agent_toml", default=None)


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client private key (mutual TLS)")
    insecure: bool = Field(False, description="skip host name verification (testing only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        for f in (self.ca_file, self.cert_file, self.key_file):
            if f is not None and not f.is_file():
                raise ValueError(f"file not found: {f}")
        return self


class BrokerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port")
    protocol: Literal["5", "3.1.1", "auto"] = Field("5", description="MQTT version; auto falls back to 3.1.1")
    username: str | None = None
    password: SecretStr | None = Field(None, description="set EDGELOOP_BROKER__PASSWORD rather than the file")
    tls: TlsConfig | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    reconnect_max_s: float = Field(30.0, ge=1, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        BrokerSettings.from_url(v)  # raises with a clear message
        return v

    def settings(self) -> BrokerSettings:
        s = BrokerSettings.from_url(
            self.url,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            protocol=self.protocol,
            keepalive=self.keepalive,
            reconnect_max_s=self.reconnect_max_s,
        )
        if self.tls is not None:
            s.tls = True
            s.ca_file = str(self.tls.ca_file) if self.tls.ca_file else None
            s.cert_file = str(self.tls.cert_file) if self.tls.cert_file else None
            s.key_file = str(self.tls.key_file) if self.tls.key_file else None
            s.tls_insecure = self.tls.insecure
        return s


class Int8Config(BaseModel):
    """The INT8 gate: an INT8 engine goes live only when it agrees with the release's FP32 model."""

    model_config = ConfigDict(extra="forbid")

    verify: bool = Field(True, description="verify every INT8 engine against FP32 before it goes live")
    max_drop_points: float = Field(1.0, ge=0, le=100, description="largest top-1 drop (points) that verifies")
    min_agreement: float = Field(0.97, ge=0, le=1, description="top-1 agreement with FP32 that verifies")
    images: int = Field(500, ge=10, le=100_000, description="labelled images verified on (eval_dir, else golden)")
    calibration_images: int = Field(
        1024, ge=32, le=100_000, description="field images a local re-quantization calibrates on"
    )


class SelectionConfig(BaseModel):
    """How the agent picks what it runs: every runtime x precision it can run that the release carries
    (or that it can make itself with a local calibration), each self-tested, INT8 verified against FP32
    (``[int8]``), timed, and the fastest verified one wins. A pin narrows the choice."""

    model_config = ConfigDict(extra="forbid")

    measure: bool = Field(
        True, description="measure every candidate; off: the first that works (runtime priority, best precision)"
    )
    runtime: str | None = Field(None, description="pin a runtime (a registered name) under `[runtime] type = auto`")
    precision: Literal["fp32", "fp16", "int8"] | None = Field(
        None, description="pin a precision (a deploy command's own precision still wins)"
    )
    calibrate: bool = Field(
        True, description="also try an INT8 engine made here when the release has none (needs field images)"
    )
    batch: int = Field(64, ge=1, le=4096, description="batch the candidates' throughput is measured at")
    seconds: float = Field(1.0, gt=0, le=60, description="timing per candidate (median of three rounds)")
    budget_s: float = Field(
        120.0, gt=0, le=3600, description="bound on the whole selection: candidates not reached by then are skipped"
    )

    @field_validator("runtime")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in registry.names():
            raise ValueError(f"unknown runtime {v!r}; registered: {', '.join(registry.names())}")
        return v


class AgentConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGELOOP_", env_nested_delimiter="__", extra="forbid")

    device_id: Id = Field(description="this device's id, unique in the fleet ([A-Za-z0-9_-]{1,64})")
    fleet: Id = Field("default", description="fleet the device belongs to")
    broker: BrokerConfig = BrokerConfig()
    state_dir: Path = Field(Path("/var/lib/edgeloop"), description="releases, engines, outbox, active engine")
    eval_dir: Path | None = Field(None, description="labelled ImageFolder set for on-device accuracy")
    eval_limit: int | None = Field(None, ge=1, description="evaluate on at most this many images")
    field_dir: Path | None = Field(None, description="unlabelled field images (sample / recalibrate)")
    # validated through the runtime registry (the table's ``type`` picks the model); SerializeAsAny so that
    # check-config prints every field of the backend's config, not only the base's ``type``
    runtime: SerializeAsAny[RuntimeConfig] = Field(
        default_factory=AutoConfig, description="inference backend: auto, or one registered runtime's table"
    )
    trusted_keys: list[Path] = Field(default_factory=list, description="ed25519 public keys (PEM) of release signers")
    require_signature: bool = Field(True, description="refuse unsigned releases")
    command_keys: list[Path] = Field(
        default_factory=list,
        description="ed25519 public keys (PEM) of the hosts that sign commands (default: trusted_keys)",
    )
    require_command_signature: bool | None = Field(
        None, description="refuse unsigned or forged commands, rollbacks included (default: as require_signature)"
    )
    max_clock_skew_s: float = Field(
        600.0, ge=10, le=7 * 86400, description="refuse commands whose sent_at is further than this from the clock"
    )
    max_command_kb: int = Field(512, ge=16, le=65536, description="refuse larger command payloads before decoding")
    max_artifact_mb: int = Field(512, ge=1, description="refuse artifacts larger than this")
    http_timeout_s: float = Field(30.0, gt=0)
    upload_token_file: Path | None = Field(
        None, description="this device's upload token (upload.token from `edgeloop certs device`), sent with uploads"
    )
    upload_token: SecretStr | None = Field(None, description="the upload token itself: set EDGELOOP_UPLOAD_TOKEN")
    selftest_tolerance: float = Field(0.10, ge=0, le=1, description="allowed golden-set top-1 drop vs the release's")
    selftest_min_top1: float = Field(0.5, ge=0, le=1, description="golden-set floor when the release states none")
    status_interval_s: float = Field(30.0, ge=1, description="heartbeat with system telemetry")
    int8: Int8Config = Int8Config()
    selection: SelectionConfig = SelectionConfig()
    inference: InferenceConfig | None = Field(
        None, description="serve the active engine to local applications (off unless the table is there)"
    )

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime(cls, v: object) -> RuntimeConfig:
        return registry.parse_config(v)

    @model_validator(mode="after")
    def _paths(self) -> AgentConfig:
        for k in [*self.trusted_keys, *self.command_keys]:
            if not k.is_file():
                raise ValueError(f"trusted key not found: {k}")
        if self.require_signature and not self.trusted_keys:
            raise ValueError("require_signature is on but no trusted_keys are configured")
        if self.require_command_signature is None:
            self.require_command_signature = self.require_signature
        if self.require_command_signature and not (self.command_keys or self.trusted_keys):
            raise ValueError("require_command_signature is on but neither command_keys nor trusted_keys are configured")
        pin = self.selection.runtime
        if pin is not None and not isinstance(self.runtime, AutoConfig) and pin != self.runtime.type:
            raise ValueError(f"selection.runtime pins {pin!r} but [runtime] is {self.runtime.type!r}")
        if self.upload_token_file is not None and not self.upload_token_file.is_file():
            raise ValueError(f"upload_token_file {self.upload_token_file} not found")
        for name in ("eval_dir", "field_dir"):
            p = getattr(self, name)
            if p is not None and not p.is_dir():
                raise ValueError(f"{name} {p} is not a directory")
        return self

    def upload_credential(self) -> str | None:
        """The upload token (``upload_token``, else ``upload_token_file``'s first line), or None."""
        if self.upload_token is not None:
            return self.upload_token.get_secret_value().strip() or None
        if self.upload_token_file is not None:
            return self.upload_token_file.read_text().strip() or None
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _TOML_FILE.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def load_config(path: str | Path | None = None, **overrides: Any) -> AgentConfig:
    """Read the TOML file (if any) and the environment; raise EdgeloopError naming bad fields."""
    toml = Path(path) if path is not None else None
    if toml is not None and not toml.is_file():
        raise EdgeloopError(f"agent config not found: {toml}")
    token = _TOML_FILE.set(toml)
    try:
        return AgentConfig(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<config>'}: {err['msg']}" for err in e.errors()
        )
        raise EdgeloopError(f"invalid agent config{f' {toml}' if toml else ''}: {problems}") from e
    except ValueError as e:  # TOML syntax errors
        raise EdgeloopError(f"cannot read agent config {toml}: {e}") from e
    finally:
        _TOML_FILE.reset(token)
