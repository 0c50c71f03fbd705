"""The registry of inference backends, the automatic choice between them, and the ``[runtime]`` table.

A backend registers its ``Runtime`` subclass with ``@register``; the class declares its ``name``,
its ``config_class`` (a ``RuntimeConfig`` with ``type: Literal[name]``, the Frigate pattern) and its
``priority`` for ``auto``. Everything else reads the registry: ``create()`` looks the class up by the
config's ``type``, ``auto`` tries the backends by priority with ``probe()``, the agent config validates
its ``[runtime]`` table with ``parse_config()``, and the CLI's ``--runtime`` choices are ``names()``.
``device/engine/runtimes/__init__.py`` imports every backend package, so the registry is full whenever any
of ``device.engine.runtimes`` is imported.

``runtime_config()`` is the one place command-line flags (``--threads``, ``--sparse``, batch sizes, a DLA core)
become a ``[runtime]`` table, and ``open_onnx()`` / ``load_onnx()`` the one "create, build, load, close on
failure" of an ONNX file.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SerializeAsAny, ValidationError, model_serializer, model_validator
from pydantic_core import ValidationError as CoreValidationError

from device.engine.runtimes.base import Precision, Runtime, RuntimeConfig, RuntimeUnavailableError

log = logging.getLogger(__name__)

AUTO = "auto"
R = TypeVar("R", bound=type[Runtime])

_RUNTIMES: dict[str, type[Runtime]] = {}


def register(cls: R) -> R:
    """Class decorator: add a backend. Its name must be new and match its config's ``type``."""
    name = cls.name
    if name in _RUNTIMES or name == AUTO:
        raise ValueError(f"runtime {name!r} registered twice")
    config_type = cls.config_class.model_fields["type"].default
    if config_type != name:
        raise ValueError(f"runtime {name!r}: its config {cls.config_class.__name__} has type {config_type!r}")
    _RUNTIMES[name] = cls
    return cls


def names() -> list[str]:
    """Registered backends in the order ``auto`` tries them (highest priority first)."""
    return [cls.name for cls in sorted(_RUNTIMES.values(), key=lambda c: (-c.priority, c.name))]


def runtime_class(name: str) -> type[Runtime]:
    try:
        return _RUNTIMES[name]
    except KeyError:
        raise RuntimeUnavailableError(f"unknown runtime {name!r}; choose one of {', '.join(names())}") from None


def config_types() -> list[str]:
    """Every value a ``[runtime]`` table's ``type`` may take."""
    return [AUTO, *sorted(_RUNTIMES)]


def parse_config(data: object) -> RuntimeConfig:
    """Validate a ``[runtime]`` table through the registry: its ``type`` picks the config model."""
    if isinstance(data, RuntimeConfig):
        return data
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a table with a `type` ({', '.join(config_types())}), got {type(data).__name__}")
    kind = data.get("type")
    if kind == AUTO:
        return AutoConfig.model_validate(data)
    if kind not in _RUNTIMES:
        known = ", ".join(config_types())
        what = f"unknown runtime type {kind!r}" if "type" in data else "the runtime table has no `type`"
        raise ValueError(f"{what}; known types: {known}")
    return _RUNTIMES[kind].config_class.model_validate(data)


def _validate_backend(name: str, table: object) -> RuntimeConfig:
    """One ``[runtime.<name>]`` sub-table of ``auto``; its errors keep their place (``<name>.<field>``)."""
    try:
        return _RUNTIMES[name].config_class.model_validate(table)
    except ValidationError as e:
        errors: list[Any] = [{**err, "loc": (name, *err["loc"])} for err in e.errors(include_url=False)]
        raise CoreValidationError.from_exception_data(e.title, errors) from e


class AutoConfig(RuntimeConfig):
    """Try every registered backend by priority (TensorRT first, ONNX Runtime last); the first that can run wins.

    Each backend may have its own sub-table (``[runtime.tensorrt]``, ``[runtime.onnxruntime]``), validated
    by that backend's config model; the ones left out take their defaults.
    """

    type: Literal["auto"] = "auto"
    backends: dict[str, SerializeAsAny[RuntimeConfig]] = Field(
        default_factory=dict, description="each registered backend's config, by name"
    )

    @model_validator(mode="before")
    @classmethod
    def _backend_tables(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        tables = dict(data)
        kind = tables.pop("type", AUTO)
        unknown = [k for k in tables if k not in _RUNTIMES]
        if unknown:
            raise ValueError(f"unknown runtime {unknown[0]!r} under auto; known: {', '.join(names())}")
        return {"type": kind, "backends": {n: _validate_backend(n, tables.get(n, {})) for n in names()}}

    @model_serializer(mode="wrap")
    def _flat(self, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Dump as it is written: ``{"type": "auto", "<backend>": {...}, ...}``."""
        dumped = handler(self)
        return {"type": dumped["type"], **dumped["backends"]}

    def backend(self, name: str) -> RuntimeConfig:
        """The sub-table of one backend (its defaults if it registered after this config was read)."""
        return self.backends.get(name) or runtime_class(name).config_class.model_validate({})


def create(config: RuntimeConfig | None = None) -> Runtime:
    """Instantiate the configured backend; ``auto`` falls back from TensorRT to ONNX Runtime."""
    config = config or AutoConfig()
    if not isinstance(config, AutoConfig):
        cls = runtime_class(config.type)
        reason = cls.probe()
        if reason:
            raise RuntimeUnavailableError(f"{cls.name} was forced by the config but cannot run here: {reason}")
        return cls(config)
    skipped: list[tuple[str, str]] = []
    for name in names():
        cls = _RUNTIMES[name]
        reason = cls.probe()
        if reason is None:
            for other, why in skipped:
                if _RUNTIMES[other].expected_here():  # e.g. TensorRT on a Jetson: a fault, not a fallback
                    log.warning("%s cannot run here: %s; falling back to %s", other, why, name)
                else:
                    log.info("%s unavailable (%s); using %s", other, why.split(":")[0], name)
            return cls(config.backend(name))
        skipped.append((name, reason))
    raise RuntimeUnavailableError("no runtime can run here: " + "; ".join(f"{n}: {why}" for n, why in skipped))


def expected_but_unavailable(config: RuntimeConfig | None = None) -> list[str]:
    """Why each backend this machine is made for (``Runtime.expected_here``: TensorRT on a Jetson) cannot
    run here, with how to fix it; only the backends ``config`` may use (all under ``auto``)."""
    warnings = []
    for name in names():
        cls = _RUNTIMES[name]
        if config is not None and not isinstance(config, AutoConfig) and config.type != name:
            continue
        where = cls.expected_here()
        reason = cls.probe() if where else None
        if where and reason:
            fix = "" if not cls.install_hint or cls.install_hint in reason else f" (fix: {cls.install_hint})"
            warnings.append(f"{name} cannot run on {where}: {reason}{fix}")
    return warnings


def _flags_for(name: str, flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that are fields of backend ``name``'s config."""
    fields = runtime_class(name).config_class.model_fields
    return {k: v for k, v in flags.items() if k in fields}


def runtime_config(
    name: str,
    threads: int | None = None,
    sparse: bool = False,
    batches: tuple[int, ...] = (),
    dla_core: int | None = None,
) -> RuntimeConfig:
    """Command-line flags as a ``[runtime]`` table of backend ``name`` (or ``auto``: then in every backend).

    ``threads`` is every backend's ``threads`` (None or 0: its default); ``sparse`` is ``sparse_weights``;
    ``batches`` size the engine: ``max_batch`` is the largest and ``opt_batches`` tunes for each; ``dla_core``
    is TensorRT's. A flag that is not a field of a backend is left out of that backend's table.
    """
    flags: dict[str, Any] = {"threads": threads, "sparse_weights": sparse}
    if dla_core is not None:
        flags["dla_core"] = dla_core
    if batches:
        flags.update(max_batch=max(batches), opt_batches=tuple(sorted(set(batches))))
    if name == AUTO:
        return AutoConfig.model_validate({n: _flags_for(n, flags) for n in names()})
    return parse_config({"type": name, **_flags_for(name, flags)})


def load_onnx(
    runtime: str | RuntimeConfig | Runtime, onnx_path: str | Path, precision: str, work_dir: str | Path
) -> Runtime:
    """``onnx_path`` built into ``work_dir`` and loaded: the caller owns (and closes) the runtime it returns.

    ``runtime`` is a registry name (its defaults; ``auto`` too), a ``[runtime]`` table, or a runtime made
    already, which this takes over. On any failure the runtime is closed before the error propagates.
    """
    if isinstance(runtime, Runtime):
        rt = runtime
    else:
        rt = create(runtime_config(runtime) if isinstance(runtime, str) else runtime)
    try:
        # a precision often comes from the file's metadata as a plain str; the backend checks it against the file
        rt.load(rt.build(onnx_path, precision, work_dir))  # type: ignore[arg-type]
    except BaseException:
        rt.close()
        raise
    return rt


@contextmanager
def open_onnx(
    runtime: str | RuntimeConfig | Runtime,
    onnx_path: str | Path,
    precision: Precision | str = "fp32",
    work_dir: str | Path | None = None,
) -> Iterator[Runtime]:
    """``with open_onnx("onnxruntime", path) as rt:`` a runtime with ``onnx_path`` loaded (``rt.engine``), closed
    on exit and on failure. Without ``work_dir`` the engine is built in a temporary folder removed on exit."""
    with ExitStack() as stack:  # unwound last in, first out: the runtime is closed before its folder goes
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeloop-engine-"))
        yield stack.enter_context(load_onnx(runtime, onnx_path, precision, work_dir))
