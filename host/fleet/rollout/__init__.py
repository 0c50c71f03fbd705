"""Staged rollouts gated on what the devices measure, with automatic rollback.

A rollout has waves (default: a canary of one device, then 25%, then 100% of the fleet; targets
are cumulative). Each wave: send ``deploy`` -> wait for every device's DeployReport and
BenchmarkReport (or the wave timeout) -> gate -> promote the next wave, or abort and roll every
touched device back to the release it ran before. The knobs follow AWS IoT Jobs (rollout rate,
abort criteria as a failure fraction, timeouts) and Greengrass (``ROLLBACK`` on failure).

All state lives in the store; commands are stored before they are published (and re-published
with the same message id if the host died before the PUBACK), so a restarted host resumes where
it stopped without sending a wave twice, and agents drop any duplicate by message id.

The modules, by job: ``controller`` (the state machine and its tick), ``gates`` (what a device's
reports and a wave's failure fraction must show), ``commands`` (store, then publish, then re-send)
and ``rollback``. What a rollout is asked to do is ``host.fleet.rollout_config.RolloutConfig``.
"""

from host.fleet.rollout.commands import Publish
from host.fleet.rollout.controller import RolloutController

__all__ = ["Publish", "RolloutController"]
