"""The transformer's opt-in result cache on Redis (`transformer.cache`): the answer to a request whose inputs,
model and settings were seen before, within the TTL, without the predictor.

The key is a SHA-256 over the served model's identity (name, version, task settings, what the predictor reports
of the model) and the request: the protocol (v1 and v2 answers are stored apart), every input's name, datatype,
shape and bytes, and every request parameter that could change the answer (all but `NEUTRAL_PARAMETERS`, so a
parameter added later joins the key until someone says it changes nothing). Values are JSON, never pickle: a v2
answer as its tensors (re-encoded per request, so a cached answer goes out as binary or JSON tensors as each
caller asks), a v1 answer as its result objects.

Redis is an optimisation, never a dependency: every call is bounded by `timeout_ms`, an error or timeout is
counted (`result_cache_errors_total{reason}`) and the request goes on without the cache, and after a failure a
breaker leaves Redis alone for a while (0.5 s, doubling to 10 s while trial calls fail), so a dead Redis costs a
request nothing. Stores run in the background, after the answer has gone out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from vss_api.metrics import (
    CACHE_BREAKER_OPEN,
    CACHE_BYPASSED,
    CACHE_ERROR_REASONS,
    CACHE_ERRORS,
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_STORES,
    CACHE_TOO_LARGE,
    CacheErrorReason,
)
from vss_api.request_parameters import plain
from vss_api.serving_flags import CacheFlags
from vss_api.v2 import NUMPY_DTYPES, datatype_of

log = logging.getLogger(__name__)

FORMAT = 1  # of the key and the stored value: a change bumps it, and entries of the old form simply miss
KEY_PREFIX = "vss:result"

# Request, input and output parameters that cannot change an answer (vss_api.request_parameters): the deadline,
# how tensors are framed or encoded (a cached v2 answer is re-encoded per request), and those accepted with no
# effect. Any other parameter is part of the key.
NEUTRAL_PARAMETERS = frozenset({
    "timeout", "binary_data_output", "binary_data", "binary_data_size", "content_type",
    "sequence_id", "sequence_start", "sequence_end", "priority",
})

Tensors = dict[str, npt.NDArray[np.generic]]


# --- keys ---------------------------------------------------------------------------------------------------

def model_identity(name: str, version: str, task: str, settings: Mapping[str, Any],
                   predictor_config: Mapping[str, Any]) -> str:
    """What makes two transformers give the same answer to the same request, as a hex digest: the model's name and
    version, the task and its settings (the VSSModel's `transformer.<task>` block), and what the predictor
    reports of the model it serves (tensors, backend, the export's metadata), less its batching, which changes
    no answer."""
    config = {k: v for k, v in predictor_config.items() if k != "max_batch_size"}
    document = {"format": FORMAT, "model": name, "version": version, "task": task, "settings": settings,
                "predictor": config}
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _answer_parameters(parameters: object, where: str) -> dict[str, object]:
    return {k: v for k, v in sorted(plain(parameters, where).items()) if k not in NEUTRAL_PARAMETERS}


def _length(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little")


def _tensor_bytes(tensor: InferInput) -> Iterable[bytes]:
    """The tensor's contents as sent: the raw bytes of the binary extension and gRPC's raw contents as they are,
    JSON or typed contents as the array they hold (numbers as their bytes, BYTES elements length-prefixed)."""
    raw = tensor._raw_data  # KServe keeps binary contents here and offers no public accessor
    if raw is not None:
        yield b"raw"
        yield bytes(raw)
        return
    array = tensor.as_numpy()
    if array.dtype != np.object_:
        yield b"values"
        yield np.ascontiguousarray(array).tobytes()
        return
    yield b"elements"
    for item in array.reshape(-1):
        data = _element(item)
        yield (b"s" if isinstance(item, str) else b"b") + _length(data)
        yield data


def _element(item: object) -> bytes:
    """One element of a BYTES tensor: bytes as they are, a string (JSON) as UTF-8."""
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return str(item).encode()


def v2_key(identity: str, request: InferRequest) -> str:
    """The key of a v2 request to the model `identity` names. Inputs are read by name, so their order does not
    count; their contents, datatypes and shapes do."""
    digest = hashlib.sha256()
    header = {"identity": identity, "protocol": "v2",
              "parameters": _answer_parameters(request.parameters, "request"),
              "outputs": sorted((t.name, orjson.dumps(_answer_parameters(t.parameters, "output")).decode())
                                for t in request.request_outputs or ())}
    digest.update(orjson.dumps(header, option=orjson.OPT_SORT_KEYS))
    for tensor in sorted(request.inputs, key=lambda t: t.name):
        meta = {"name": tensor.name, "datatype": tensor.datatype, "shape": [int(s) for s in tensor.shape],
                "parameters": _answer_parameters(tensor.parameters, f"input {tensor.name!r}")}
        encoded = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)
        digest.update(_length(encoded) + encoded)
        for chunk in _tensor_bytes(tensor):
            digest.update(_length(chunk))
            digest.update(chunk)
    return f"{KEY_PREFIX}:{FORMAT}:{digest.hexdigest()}"


def v1_key(identity: str, payload: Mapping[str, Any]) -> str:
    """The key of a v1 body (`instances`, and any other member) to the model `identity` names."""
    body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    digest = hashlib.sha256(orjson.dumps({"identity": identity, "protocol": "v1"}))
    digest.update(body)
    return f"{KEY_PREFIX}:{FORMAT}:{digest.hexdigest()}"


# --- values -------------------------------------------------------------------------------------------------

class CorruptEntry(ValueError):
    """A stored value this transformer cannot read: another format, or not ours."""


def encode_v2(tensors: Mapping[str, npt.NDArray[np.generic]]) -> bytes:
    outputs = []
    for name, array in tensors.items():
        datatype = datatype_of(array)
        if datatype == "BYTES":
            data: object = [base64.b64encode(_element(x)).decode() for x in array.reshape(-1)]
        else:
            data = base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
                                    ).decode()
        outputs.append({"name": name, "datatype": datatype, "shape": list(array.shape), "data": data})
    return orjson.dumps({"format": FORMAT, "protocol": "v2", "outputs": outputs})


def decode_v2(value: bytes) -> Tensors:
    try:
        document = orjson.loads(value)
        if document.get("format") != FORMAT or document.get("protocol") != "v2":
            raise CorruptEntry("not a v2 answer of this format")
        tensors: Tensors = {}
        for output in document["outputs"]:
            shape = tuple(int(s) for s in output["shape"])
            if output["datatype"] == "BYTES":
                items = [base64.b64decode(x) for x in output["data"]]
                array: npt.NDArray[np.generic] = np.empty(len(items), dtype=object)
                array[:] = items
            else:
                dtype = NUMPY_DTYPES[output["datatype"]].newbyteorder("<")
                array = np.frombuffer(base64.b64decode(output["data"]), dtype=dtype).astype(dtype.newbyteorder("="))
            tensors[str(output["name"])] = array.reshape(shape)
        return tensors
    except CorruptEntry:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptEntry(f"unreadable v2 answer: {exc}") from exc


def encode_v1(predictions: list[dict[str, object]]) -> bytes:
    return orjson.dumps({"format": FORMAT, "protocol": "v1", "predictions": predictions},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def decode_v1(value: bytes) -> list[dict[str, object]]:
    try:
        document = orjson.loads(value)
        predictions = document["predictions"] if document.get("format") == FORMAT and (
            document.get("protocol") == "v1") else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptEntry(f"unreadable v1 answer: {exc}") from exc
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
        raise CorruptEntry("not a v1 answer of this format")
    return predictions


# --- the breaker ----------------------------------------------------------------------------------------------

@dataclass
class Breaker:
    """Closed (every call goes to Redis) until a call fails; then open for `delay_s`, after which one trial call
    goes through: its success closes the breaker, its failure opens it again for twice as long (up to
    `max_delay_s`). Failures of calls started before it opened do not lengthen it. Pure: the caller gives the
    time."""

    min_delay_s: float = 0.5
    max_delay_s: float = 10.0
    delay_s: float = 0.0  # 0: closed
    open_until: float = 0.0
    trial_running: bool = False

    @property
    def closed(self) -> bool:
        return self.delay_s == 0.0

    def admit(self, now: float) -> bool | None:
        """None: leave Redis alone; False: an ordinary call; True: the trial call."""
        if self.closed:
            return False
        if now < self.open_until or self.trial_running:
            return None
        self.trial_running = True
        return True

    def succeeded(self, trial: bool) -> None:
        if trial or self.closed:
            self.delay_s, self.trial_running = 0.0, False

    def failed(self, trial: bool, now: float) -> None:
        if trial:
            self.delay_s = min(self.max_delay_s, self.delay_s * 2)
            self.trial_running = False
        elif self.closed:
            self.delay_s = self.min_delay_s
        else:
            return  # a call admitted before the breaker opened: it is open already
        self.open_until = now + self.delay_s


# --- metrics --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheMetrics:
    hits: Counter
    misses: Counter
    errors: Counter
    bypassed: Counter
    stores: Counter
    too_large: Counter
    breaker_open: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> CacheMetrics:
        labels = ["model_name", "version"]
        return cls(
            hits=Counter(CACHE_HITS, "Requests answered from the result cache.", labels, registry=registry),
            misses=Counter(CACHE_MISSES, "Result cache lookups that found no answer.", labels, registry=registry),
            errors=Counter(CACHE_ERRORS, "Result cache calls that failed; the request went on without the cache.",
                           [*labels, "reason"], registry=registry),
            bypassed=Counter(CACHE_BYPASSED, "Result cache calls left out while the breaker was open.", labels,
                             registry=registry),
            stores=Counter(CACHE_STORES, "Answers stored in the result cache.", labels, registry=registry),
            too_large=Counter(CACHE_TOO_LARGE, "Answers not stored: larger than transformer.cache.maxEntryBytes.",
                              labels, registry=registry),
            breaker_open=Gauge(CACHE_BREAKER_OPEN, "1 while the result cache is left alone after a failure.",
                               labels, registry=registry),
        )


# --- the cache ------------------------------------------------------------------------------------------------

class RedisStore:
    """The two Redis calls the cache makes, on a `redis.asyncio` client (a protocol of one, so the cache logic is
    tested against a real redis-server and nothing else)."""

    def __init__(self, url: str, *, timeout_s: float, max_connections: int) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries: the breaker decides when Redis is tried again, and a retried timeout would double the wait.
        self.client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                     retry=Retry(NoBackoff(), 0), max_connections=max_connections)

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self.client.set(key, value, ex=ttl_seconds)

    async def close(self) -> None:
        await self.client.aclose()


def _reason(exc: BaseException) -> CacheErrorReason:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, (TimeoutError, RedisTimeoutError)):
        return "timeout"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "connection"
    return "redis"


@dataclass
class ResultCache:
    """Lookups and stores for one served model version, counted and bounded; never raises to the request."""

    store: RedisStore
    flags: CacheFlags
    metrics: CacheMetrics
    model_name: str
    version: str
    clock: Callable[[], float] = time.monotonic
    breaker: Breaker = field(default_factory=Breaker)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        labels = {"model_name": self.model_name, "version": self.version}
        for counter in (self.metrics.hits, self.metrics.misses, self.metrics.bypassed, self.metrics.stores,
                        self.metrics.too_large):
            counter.labels(**labels)
        for reason in CACHE_ERROR_REASONS:  # every series from zero, so increase() sees the first one
            self.metrics.errors.labels(**labels, reason=reason)
        self.metrics.breaker_open.labels(**labels).set(0)
        self._labels = labels

    @property
    def timeout_s(self) -> float:
        return self.flags.timeout_ms / 1000

    async def lookup(self, key: str) -> bytes | None:
        """The stored answer, or None on a miss, an error or while the breaker is open (each counted)."""
        trial = self.breaker.admit(self.clock())
        if trial is None:
            self.metrics.bypassed.labels(**self._labels).inc()
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                value = await self.store.get(key)
        except Exception as exc:  # any failure of Redis or the client: the request goes on without the cache
            self._failed(exc, trial, "lookup")
            return None
        self._succeeded(trial)
        (self.metrics.hits if value is not None else self.metrics.misses).labels(**self._labels).inc()
        return value

    def corrupt(self, key: str, exc: Exception) -> None:
        """A stored value that did not decode: counted, and served as a miss (the fresh answer replaces it)."""
        self.metrics.errors.labels(**self._labels, reason="corrupt").inc()
        log.warning("unreadable result cache entry", extra={"key": key, "error": str(exc)})

    def keep(self, key: str, value: bytes) -> None:
        """Store `value` in the background unless it is too large or the breaker is open."""
        if len(value) > self.flags.max_entry_bytes:
            self.metrics.too_large.labels(**self._labels).inc()
            return
        trial = self.breaker.admit(self.clock())
        if trial is None:
            self.metrics.bypassed.labels(**self._labels).inc()
            return
        task = asyncio.get_running_loop().create_task(self._store(key, value, trial))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _store(self, key: str, value: bytes, trial: bool) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.store.set(key, value, self.flags.ttl_seconds)
        except Exception as exc:  # as in lookup: counted, never raised
            self._failed(exc, trial, "store")
            return
        self._succeeded(trial)
        self.metrics.stores.labels(**self._labels).inc()

    def _succeeded(self, trial: bool) -> None:
        was_open = not self.breaker.closed
        self.breaker.succeeded(trial)
        if was_open and self.breaker.closed:
            self.metrics.breaker_open.labels(**self._labels).set(0)
            log.info("result cache reachable again", extra={"model": self.model_name})

    def _failed(self, exc: BaseException, trial: bool, call: str) -> None:
        reason = _reason(exc)
        self.metrics.errors.labels(**self._labels, reason=reason).inc()
        was_closed = self.breaker.closed
        self.breaker.failed(trial, self.clock())
        if was_closed or trial:
            self.metrics.breaker_open.labels(**self._labels).set(1)
            log.warning("result cache unavailable: serving without it", extra={
                "model": self.model_name, "call": call, "reason": reason, "error": repr(exc),
                "retry_in_s": self.breaker.delay_s})

    async def close(self) -> None:
        """Wait for the stores under way (each bounded by the timeout), then close the connections."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.store.close()
