"""Releases: what a device is asked to run (the signed manifest and its artifacts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

from shared.drift import Summary
from shared.errors import EdgeloopError
from shared.inputstats import InputProfile
from shared.protocol.base import (
    Count,
    Finite,
    Fraction,
    Id,
    NonNegFloat,
    Precision,
    Sha256,
    UtcDatetime,
    Version,
    WireModel,
    utcnow,
    version_key,
)

_Positive = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
_Dim = Annotated[int, Field(ge=1, le=65536)]
RuntimeName = Literal["onnxruntime", "openvino", "tensorrt"]
_StatName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
_MAX_STATS = 32
_MAX_CLASSES = 1000


class InputReference(WireModel):
    """The reference images' input statistics (``shared.inputstats``), overall and per predicted class."""

    names: tuple[_StatName, ...] = Field(min_length=1, max_length=_MAX_STATS)
    mean: tuple[Finite, ...] = Field(max_length=_MAX_STATS)
    std: tuple[NonNegFloat, ...] = Field(max_length=_MAX_STATS)
    class_counts: tuple[Count, ...] = Field(min_length=2, max_length=_MAX_CLASSES)
    class_mean: tuple[tuple[Finite, ...], ...] = Field(max_length=_MAX_CLASSES)
    class_std: tuple[tuple[NonNegFloat, ...], ...] = Field(max_length=_MAX_CLASSES)

    @model_validator(mode="after")
    def _shapes(self) -> InputReference:
        k, c = len(self.names), len(self.class_counts)
        if len(set(self.names)) != k or len(self.mean) != k or len(self.std) != k:
            raise ValueError("names must be unique, with one mean and one std each")
        if len(self.class_mean) != c or len(self.class_std) != c:
            raise ValueError("class_mean and class_std need one row per class of class_counts")
        if any(len(row) != k for row in (*self.class_mean, *self.class_std)):
            raise ValueError("each class row needs one value per name")
        return self

    def profile(self) -> InputProfile:
        return InputProfile(self.names, self.mean, self.std, self.class_counts, self.class_mean, self.class_std)

    @classmethod
    def of(cls, p: InputProfile) -> InputReference:
        return cls(
            names=p.names,
            mean=p.mean,
            std=p.std,
            class_counts=p.class_counts,
            class_mean=p.class_mean,
            class_std=p.class_std,
        )


class ReleaseRef(WireModel):
    name: Id
    version: Version

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def key(self) -> tuple[int, ...]:
        return version_key(self.version)


class PreprocessingSpec(WireModel):
    """The model input, as shared.imaging.Preprocessing applies it."""

    mean: tuple[Finite, Finite, Finite]
    std: tuple[_Positive, _Positive, _Positive]
    size: int = Field(32, ge=8, le=1024)
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"


class DriftReference(WireModel):
    """What the release's calibration images look like to its FP32 model (``shared.drift.Summary``).

    Devices compare what they serve with it; the same figures sit in the ONNX metadata, so a
    standalone ``edgeloop-agent serve`` has them too.
    """

    n_images: int = Field(ge=1, le=10_000_000)
    channel_mean: tuple[Fraction, Fraction, Fraction]
    channel_std: tuple[Fraction, Fraction, Fraction]
    detail_mean: Fraction
    detail_std: Fraction
    confidence_hist: tuple[Fraction, ...] = Field(min_length=2, max_length=64)
    class_hist: tuple[Fraction, ...] = Field(min_length=2, max_length=1000)
    source: str = Field("", max_length=256, description="which images the figures come from")
    inputs: InputReference | None = Field(
        None,
        description="input statistics per predicted class, what input drift is measured against (None: a "
        "reference made before them; devices then score input drift from channel_mean and detail alone)",
    )

    @model_validator(mode="after")
    def _classes_agree(self) -> DriftReference:
        if self.inputs is not None and len(self.inputs.class_counts) != len(self.class_hist):
            raise ValueError("inputs.class_counts must have one entry per class of class_hist")
        return self

    def summary(self) -> Summary:
        return Summary(
            self.n_images,
            self.channel_mean,
            self.channel_std,
            self.detail_mean,
            self.detail_std,
            self.confidence_hist,
            self.class_hist,
            self.inputs.profile() if self.inputs is not None else None,
        )

    @classmethod
    def from_summary(cls, s: Summary, source: str = "") -> DriftReference:
        return cls(
            n_images=s.n_images,
            channel_mean=s.channel_mean,
            channel_std=s.channel_std,
            detail_mean=s.detail_mean,
            detail_std=s.detail_std,
            confidence_hist=s.confidence_hist,
            class_hist=s.class_hist,
            source=source[:256],
            inputs=InputReference.of(s.inputs) if s.inputs is not None else None,
        )


class ModelInfo(WireModel):
    arch: str = Field(max_length=64)
    classes: tuple[Annotated[str, StringConstraints(min_length=1, max_length=64)], ...] = Field(
        min_length=2, max_length=1000
    )
    input_shape: tuple[_Dim, _Dim, _Dim] = (3, 32, 32)
    preprocessing: PreprocessingSpec
    source_top1: Fraction = Field(description="top-1 of the source model on the host's test set")
    params: int | None = Field(None, ge=0, le=10**13)
    macs: int | None = Field(None, ge=0, le=10**15)
    reference: DriftReference | None = Field(None, description="drift reference statistics (None: no drift score)")

    @model_validator(mode="after")
    def _shape_matches(self) -> ModelInfo:
        if self.input_shape[1:] != (self.preprocessing.size, self.preprocessing.size):
            raise ValueError("input_shape must match preprocessing.size")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        if self.reference is not None and len(self.reference.class_hist) != len(self.classes):
            raise ValueError("reference.class_hist must have one entry per class")
        return self


class Artifact(WireModel):
    """One ONNX file of a release; devices pick the one meant for their runtime and precision."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
    url: str = Field(max_length=2048, description="absolute http(s) URL, or a path relative to the release's base URL")
    sha256: Sha256
    size: int = Field(gt=0, le=2**40)
    precision: Precision
    runtime: Literal["any"] | RuntimeName = "any"
    sparsity: Literal["dense", "2:4"] = "dense"
    calibration: Literal["none", "ptq", "qat"] = "none"
    golden_top1: Fraction | None = Field(None, description="top-1 of this file on shared/samples (device self-test)")

    @field_validator("url")
    @classmethod
    def _http_or_relative(cls, v: str) -> str:
        if "://" in v and not v.startswith(("http://", "https://")):
            raise ValueError("artifact URLs must be http(s)")
        return v


def pick_artifact(
    artifacts: Sequence[Artifact], runtime: str, precision: Precision | None = None, also: tuple[str, ...] = ()
) -> Artifact | None:
    """The artifact a device on ``runtime`` runs: exact runtime match first, then the runtimes in ``also`` whose
    files this one runs as well (e.g. OpenVINO runs ONNX Runtime's CPU form), then a portable one."""
    wanted = [a for a in artifacts if precision is None or a.precision == precision]
    for tag in (runtime, *also, "any"):
        candidate = [a for a in wanted if a.runtime == tag]
        if candidate:
            return candidate[0]
    return None


class ReleaseManifest(WireModel):
    """What a release is. Signed (ed25519) over its canonical JSON without the signature fields."""

    name: Id
    version: Version
    created_at: UtcDatetime = Field(default_factory=utcnow)
    model: ModelInfo
    not_after: UtcDatetime | None = Field(None, description="devices refuse the release after this time")
    artifacts: tuple[Artifact, ...] = Field(min_length=1, max_length=32)
    recipe: str | None = Field(None, max_length=65536, description="the compression recipe used (TOML)")
    runtimes: tuple[RuntimeName, ...] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="the only runtimes a device may run this release on: where the compressed model was measured "
        "faster than its unpruned INT8 (host/fleet/ship.py); None: any runtime",
    )
    notes: str = Field("", max_length=4096)
    key_id: str | None = Field(None, max_length=64)
    signature: str | None = Field(None, max_length=256, description="base64 ed25519 signature")

    # fields added after the first agents shipped: left out of the JSON while unset, so an older agent
    # (extra="forbid") still reads, and an older signature still verifies, every manifest that does not use them
    _OMIT_WHEN_UNSET: ClassVar[tuple[str, ...]] = ("runtimes",)

    @model_serializer(mode="wrap")
    def _omit_unset_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)  # a model serializes to a dict in every mode
        for name in self._OMIT_WHEN_UNSET:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @property
    def ref(self) -> ReleaseRef:
        return ReleaseRef(name=self.name, version=self.version)

    def ships_to(self, runtime: str) -> bool:
        """Whether a device may run this release on ``runtime`` (a registry name; a DLA target is tensorrt's)."""
        return self.runtimes is None or runtime.split(":", 1)[0] in self.runtimes

    def artifact_for(self, runtime: str, precision: Precision | None = None, also: tuple[str, ...] = ()) -> Artifact:
        """The artifact a device should run (``pick_artifact``); an error when there is none."""
        found = pick_artifact(self.artifacts, runtime, precision, also)
        if found is not None:
            return found
        raise EdgeloopError(
            f"release {self.ref} has no artifact for runtime {runtime!r}"
            + (f" at precision {precision}" if precision else "")
        )
