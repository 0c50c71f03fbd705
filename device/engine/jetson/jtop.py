"""jetson-stats (``from jtop import jtop``) as a telemetry source, where it is installed and its service runs.

jtop reads the power monitors (INA3221) and thermal zones from sysfs through its root service
(``jtop.service``, socket ``/run/jtop.sock``), so its client needs no root and gets what tegrastats
only shows to root (EMC and GPU frequencies). It is preferred to tegrastats when it answers
(device/engine/jetson/sources.py). Install: ``sudo pip3 install -U jetson-stats`` on the board, then log out
and in (the service's group). The package is imported lazily: the agent never needs it.

The jtop 4.x/7.x properties read (``jtop/jtop.py`` docstrings): ``power`` ``{'rail': {name: {'power',
'avg', 'online'}}, 'tot': {'power', 'name'?}}`` in mW; ``temperature`` ``{name: {'temp', 'online'}}``
(offline: -256); ``gpu`` ``{name: {'status': {'load'}, 'freq': {'cur'}}}`` (kHz); ``memory`` ``RAM``/``SWAP``
(``tot``, ``used`` in KB) and ``EMC`` (``val`` %, ``cur`` kHz); ``nvpmodel`` (``str()`` is the mode name)
and ``jetson_clocks`` (truthy when active), each None where the board has none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from device.engine.jetson.sample import SUM_OF_RAILS, Sample, SampleStream, board_power

log = logging.getLogger(__name__)

OFFLINE_C = -256.0


class JtopUnavailableError(RuntimeError):
    """jetson-stats is not installed, or its service did not answer."""


def jtop_class() -> Any | None:
    """The ``jtop`` client class, None where jetson-stats is not installed."""
    try:
        from jtop import jtop
    except ImportError:
        return None
    return jtop


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rails(power: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    now: dict[str, float] = {}
    avg: dict[str, float] = {}
    for name, rail in _dict(power.get("rail")).items():
        r = _dict(rail)
        if not r.get("online", True) or (mw := _num(r.get("power"))) is None:
            continue
        now[str(name)] = mw
        if (mean := _num(r.get("avg"))) is not None:
            avg[str(name)] = mean
    return now, avg


def _temperatures(temperature: object) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, sensor in _dict(temperature).items():
        s = _dict(sensor)
        celsius = _num(s.get("temp"))
        if s.get("online", True) and celsius is not None and celsius > OFFLINE_C and name.lower() != "pmic":
            out[str(name).lower()] = celsius
    return out


def _gpu(gpu: object) -> tuple[float | None, float | None]:
    first = _dict(next(iter(_dict(gpu).values()), None))
    khz = _num(_dict(first.get("freq")).get("cur"))
    return _num(_dict(first.get("status")).get("load")), khz / 1000 if khz is not None else None


def _mb(memory: Mapping[str, Any], key: str) -> tuple[float | None, float | None]:
    m = _dict(memory.get(key))
    used, total = _num(m.get("used")), _num(m.get("tot"))
    return (used / 1024 if used is not None else None), (total / 1024 if total is not None else None)


def sample_from_jtop(jetson: Any) -> Sample:
    """A ``Sample`` of what a started jtop client holds now; what it lacks is None."""
    power = _dict(jetson.power)
    rails, rails_avg = _rails(power)
    tot = _dict(power.get("tot"))
    total = _num(tot.get("power"))
    # jtop names the total's rail when it is an input rail, and sums the rails otherwise
    total_of: str | None = str(tot.get("name", SUM_OF_RAILS)) if total is not None else None
    if total is None and (fallback := board_power(rails)) is not None:
        total, total_of = fallback
    memory = _dict(jetson.memory)
    emc = _dict(memory.get("EMC"))
    emc_khz = _num(emc.get("cur"))
    ram_used, ram_total = _mb(memory, "RAM")
    swap_used, swap_total = _mb(memory, "SWAP")
    gpu_load, gpu_freq = _gpu(jetson.gpu)
    nvp, clocks = jetson.nvpmodel, jetson.jetson_clocks
    return Sample(
        source="jtop",
        ram_used_mb=ram_used,
        ram_total_mb=ram_total,
        swap_used_mb=swap_used,
        swap_total_mb=swap_total,
        emc_load_percent=_num(emc.get("val")) if emc.get("online", True) else None,
        emc_freq_mhz=emc_khz / 1000 if emc_khz is not None else None,
        gpu_load_percent=gpu_load,
        gpu_freq_mhz=gpu_freq,
        temperatures_c=_temperatures(jetson.temperature),
        rails_mw=rails,
        rails_avg_mw=rails_avg,
        power_total_mw=total,
        power_total_of=total_of,
        nvpmodel=str(nvp)[:64] if nvp is not None else None,
        jetson_clocks=bool(clocks) if clocks is not None else None,
    )


class JtopStream(SampleStream):
    """A jtop client for as long as the stream runs; its thread hands each update to the subscribers."""

    source = "jtop"

    def __init__(self, interval_ms: int = 500) -> None:
        super().__init__()
        self.interval_ms = interval_ms
        self._client: Any | None = None

    def start(self) -> None:
        """Connect to the jtop service; raises ``JtopUnavailableError`` when it is not installed or not answering."""
        cls = jtop_class()
        if cls is None:
            raise JtopUnavailableError("jetson-stats is not installed (sudo pip3 install -U jetson-stats)")
        client = cls(interval=self.interval_ms / 1000)
        client.attach(self._on_update)
        try:
            client.start()  # connects, and hands the first update to _on_update before it returns
        except Exception as e:  # jtop raises JtopException, OSError or its manager's errors; all mean "no jtop"
            raise JtopUnavailableError(f"the jtop service did not answer: {e}") from e
        self._client = client

    def _on_update(self, jetson: Any) -> None:
        # runs on jtop's thread: an exception here would end it (jtop keeps it and re-raises in ok())
        try:
            sample = sample_from_jtop(jetson)
        except Exception:  # a jtop version whose properties differ: log it, keep the stream alive
            log.exception("could not read a jtop update")
            return
        self._publish(sample)

    def stop(self, timeout: float = 2.0) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.detach(self._on_update)
        try:
            client.close()
        except Exception:  # closing is best effort: the client's thread is a daemon
            log.debug("closing jtop failed", exc_info=True)
        if client.is_alive():
            client.join(timeout)
