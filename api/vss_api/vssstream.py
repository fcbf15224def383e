"""The VSSStream resource (`serving.vss.ai/v1alpha1`): one camera or recording, the VSSModel that reads its
frames, how objects are tracked and which lines and zones turn tracks into events, and where events go.

Coordinates of lines and zones are fractions of the frame (0..1, x to the right, y down), so they hold when a
camera comes back from a reconnect at another resolution. Credentials never appear here: `source.credentials`
names a Secret, and the URL may not carry a user or password."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from vss_api.vssmodel import (
    API_VERSION,
    DNS_LABEL,
    ObjectMeta,
    Resources,
    SpecModel,
    _validations,
    cel,
    load_one,
)

STREAM_KIND: Literal["VSSStream"] = "VSSStream"
STREAM_PLURAL = "vssstreams"
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")
ZONE_NAME = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class Credentials(SpecModel):
    """A Secret holding a username and a password, read by the worker into its environment."""

    secret_name: Annotated[str, Field(pattern=DNS_LABEL, max_length=253, description=(
        "A Secret in the stream's namespace; the worker reads it, the spec and the logs never hold it."))]
    username_key: Annotated[str, Field(min_length=1, max_length=253, description=(
        "The key of that Secret holding the username."))] = "username"
    password_key: Annotated[str, Field(min_length=1, max_length=253, description=(
        "The key of that Secret holding the password."))] = "password"  # noqa: S105 (a key name)


class Source(SpecModel):
    """The camera or recording the worker decodes."""

    model_config = ConfigDict(json_schema_extra=_validations(
        cel("!self.url.matches('^[a-z]+://[^/]*@')",
            "source.url must not carry credentials: name a Secret in source.credentials", ".url")))

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^(rtsps?|https?|file)://", description=(
        "rtsp:// or rtsps:// camera, http(s):// MJPEG or HLS, or file:// recording."))]
    transport: Transport = Field(default=Transport.TCP, description="RTSP transport (rtsp/rtsps only).")
    credentials: Credentials | None = Field(default=None, description=(
        "The camera's username and password, from a Secret (the URL itself may not carry them)."))

    @field_validator("url")
    @classmethod
    def _no_userinfo(cls, url: str) -> str:
        if urlsplit(url).scheme not in SOURCE_SCHEMES:
            raise ValueError(f"source.url scheme must be one of {', '.join(SOURCE_SCHEMES)}")
        if "@" in urlsplit(url).netloc:
            raise ValueError("source.url must not carry credentials: name a Secret in source.credentials")
        return url


class ModelRef(SpecModel):
    """The VSSModel that reads the frames."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=40, description=(
        "A detection VSSModel in the stream's namespace, reached through its v2 gRPC endpoint."))]


class SamplingMode(StrEnum):
    LIVE = "live"  # the latest frame wins: frames are dropped so that lag stays bounded
    EXHAUSTIVE = "exhaustive"  # every sampled frame is inferred, however late (recordings)


class Sampling(SpecModel):
    """Which decoded frames are sent to the model."""

    fps: Annotated[float, Field(gt=0, le=60, description="Frames per second sent to the model.")] = 5.0
    mode: SamplingMode = Field(default=SamplingMode.LIVE, description=(
        "live: the latest frame wins, frames are dropped so that lag stays bounded (cameras); exhaustive: "
        "every sampled frame is inferred, however late (recordings)."))
    max_lag_seconds: Annotated[float, Field(gt=0, le=60, description=(
        "live: a frame older than this when the model is free is dropped, not inferred."))] = 1.0


class Tracker(StrEnum):
    BYTETRACK = "bytetrack"
    OCSORT = "ocsort"
    SORT = "sort"


class Tracking(SpecModel):
    """How detections become tracks that keep an id from frame to frame."""

    tracker: Tracker = Field(default=Tracker.BYTETRACK, description=(
        "The multi-object tracker: bytetrack, ocsort or sort."))
    min_confidence: Annotated[float, Field(ge=0, le=1, description=(
        "Detections below this never reach the tracker."))] = 0.25
    lost_track_buffer: Annotated[int, Field(ge=1, le=3000, description=(
        "Frames a lost track is kept for re-identification."))] = 30
    min_track_age: Annotated[int, Field(ge=1, le=1000, description=(
        "Frames a track must have been seen in before it counts for lines and zones: unconfirmed tracks "
        "(flicker, false detections) never produce events."))] = 3


# A point as [x, y], fractions of the frame. Not {x:, y:}: YAML 1.1 parsers (kubectl's among them) read a bare
# `y` key as the boolean true.
Point = Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2, max_length=2)]


class Direction(StrEnum):
    IN = "in"  # from the left of from->to to its right (on screen, y down)
    OUT = "out"


class Line(SpecModel):
    """A counting line: a track whose anchor crosses it produces a crossing event."""

    name: Annotated[str, Field(pattern=ZONE_NAME, max_length=63, description=(
        "Names the line in events and counts; unique among lines and zones."))]
    start: Point = Field(alias="from", description="One end of the line, [x, y] as fractions of the frame.")
    end: Point = Field(alias="to", description="The other end of the line, [x, y] as fractions of the frame.")
    directions: Annotated[list[Direction], Field(min_length=1, max_length=2)] = Field(
        default_factory=lambda: [Direction.IN, Direction.OUT], description=(
            "Crossings counted: in (from the left of from->to to its right, on screen), out, or both."))
    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, description="Classes counted; empty counts every class.")

    @model_validator(mode="after")
    def _has_length(self) -> Self:
        if self.start == self.end:
            raise ValueError(f"line {self.name!r}: from and to are the same point")
        return self


class Zone(SpecModel):
    """A zone: tracks entering, leaving and dwelling in a polygon produce events."""

    name: Annotated[str, Field(pattern=ZONE_NAME, max_length=63, description=(
        "Names the zone in events and counts; unique among lines and zones."))]
    polygon: Annotated[list[Point], Field(min_length=3, max_length=64, description=(
        "The zone's corners in order, each [x, y] as fractions of the frame."))]
    dwell_seconds: Annotated[float | None, Field(gt=0, le=86400, description=(
        "A dwell event once per visit when a track has been inside this long."))] = None
    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, description="Classes counted; empty counts every class.")


class Anchor(StrEnum):
    BOTTOM_CENTER = "bottomCenter"  # where an object stands: what a line on the ground should test
    CENTER = "center"


class Analytics(SpecModel):
    """The lines and zones that turn tracks into events."""

    model_config = ConfigDict(json_schema_extra=_validations(
        cel("self.lines.all(l, !self.zones.exists(z, z.name == l.name))",
            "analytics: line and zone names must be unique")))

    anchor: Anchor = Field(default=Anchor.BOTTOM_CENTER, description=(
        "The point of a box tested against lines and zones: bottomCenter (where an object stands, for lines "
        "on the ground) or center."))
    margin: Annotated[float, Field(ge=0, le=0.2, description=(
        "A track changes side of a line, or in/out of a zone, only once its anchor is this far (a fraction "
        "of the frame) past it: jitter on the boundary is not a crossing."))] = 0.01
    lines: Annotated[list[Line], Field(max_length=64, description="Counting lines, keyed by name.", json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] = Field(default_factory=list)
    zones: Annotated[list[Zone], Field(max_length=64, description="Zones, keyed by name.", json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [line.name for line in self.lines] + [zone.name for zone in self.zones]
        if len(set(names)) != len(names):
            raise ValueError("analytics: line and zone names must be unique")
        return self


class Mqtt(SpecModel):
    """Publish every event to an MQTT broker."""

    url: Annotated[str, Field(pattern=r"^mqtts?://[^@/]+$", max_length=512, description=(
        "The broker, mqtt://host:port or mqtts:// for TLS, without credentials."))]
    topic: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^#+]+$", description=(
        "Topic events are published under (no wildcards)."))]
    qos: Literal[0, 1] = Field(default=1, description="MQTT quality of service: 0 at most once, 1 at least once.")
    credentials: Credentials | None = Field(default=None, description=(
        "The broker's username and password, from a Secret (as environment of the worker, never in the spec)."))


class Webhook(SpecModel):
    """POST every event as JSON to a URL."""

    url: Annotated[str, Field(pattern=r"^https?://[^@/]+(/.*)?$", max_length=2048, description=(
        "Where events are POSTed, http(s)://, without credentials."))]
    max_retries: Annotated[int, Field(ge=0, le=20, description=(
        "Retries of a failed POST, with backoff, before the event is dropped."))] = 5
    timeout_seconds: Annotated[float, Field(gt=0, le=60, description="Longest one POST may take.")] = 5.0


class Sinks(SpecModel):
    """Where events go."""

    websocket: bool = Field(default=True, description="Events on the worker's /events WebSocket.")
    mqtt: Mqtt | None = None
    webhooks: Annotated[list[Webhook], Field(max_length=8, description=(
        "URLs every event is POSTed to."))] = Field(default_factory=list)


class Preview(SpecModel):
    """The annotated preview (MJPEG) and live page the worker serves."""

    enabled: bool = Field(default=True, description="Serve the annotated preview and the live page.")
    fps: Annotated[float, Field(gt=0, le=30, description="Frames per second of the preview.")] = 5.0
    width: Annotated[int, Field(ge=160, le=3840, description=(
        "Width in pixels of the preview; the height follows the frame's aspect."))] = 960


class VSSStreamSpec(SpecModel):
    source: Source
    model: ModelRef
    sampling: Sampling = Field(default_factory=Sampling)
    tracking: Tracking = Field(default_factory=Tracking)
    analytics: Analytics = Field(default_factory=Analytics)
    sinks: Sinks = Field(default_factory=Sinks)
    preview: Preview = Field(default_factory=Preview)
    resources: Resources = Field(default_factory=Resources)


class VSSStream(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_version: Annotated[Literal["serving.vss.ai/v1alpha1"], Field(alias="apiVersion")] = API_VERSION
    kind: Literal["VSSStream"] = STREAM_KIND
    metadata: ObjectMeta
    spec: VSSStreamSpec

    @classmethod
    def from_yaml_file(cls, path: Path) -> VSSStream:
        """Read one VSSStream from a YAML file, with an error that names the file and the field."""
        return load_one(cls, STREAM_KIND, path)


class StreamCondition(BaseModel):
    """One kstatus condition of the stream (metav1.Condition's fields)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    type: str = Field(description="Ready, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="Why, as one CamelCase word.")
    message: str = Field(default="", description="Why, in words for a person.")
    last_transition_time: str | None = Field(default=None, description=(
        "When status last changed (RFC 3339)."))
    observed_generation: int | None = Field(default=None, description=(
        "The metadata.generation this condition was set for."))


class SourceStatus(BaseModel):
    """The source's connection as the worker sees it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    connected: bool = Field(default=False, description="Whether frames are arriving now.")
    since: str | None = Field(default=None, description="When the source last connected or was lost (RFC 3339).")
    last_error: str = Field(default="", description="Why the source is not connected, without credentials.")
    reconnects: int = Field(default=0, description="Reconnects since the worker started.")
    resolution: str | None = Field(default=None, description="WIDTHxHEIGHT of the frames decoded now.")


class VSSStreamStatus(BaseModel):
    """What the stream worker reports (kstatus conditions Ready, Reconciling, Stalled), read by the operator."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    observed_generation: int | None = Field(default=None, description=(
        "The metadata.generation this status describes."))
    conditions: list[StreamCondition] = Field(default_factory=list, max_length=16, description=(
        "kstatus conditions Ready, Reconciling and Stalled, keyed by type."), json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    source: SourceStatus | None = None
    fps: float | None = Field(default=None, description="Frames inferred per second, last minute.")
    lag_seconds: float | None = Field(default=None, description="Age of the newest inferred frame.")
    model_endpoint: str | None = Field(default=None, description="The v2 gRPC endpoint the worker calls.")
