"""``edgeloop demo``: the whole closed loop on one machine, offline (``loop``), with its field stage
(``field``: serving shifted images, drift, re-calibration)."""

from host.demo.loop import run_demo

__all__ = ["run_demo"]
