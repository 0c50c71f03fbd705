"""Learning-rate schedules as a factor of the peak rate per optimiser step (for ``LambdaLR``)."""

from __future__ import annotations

import math
from collections.abc import Callable

from host.factory.train.config import TrainConfig


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.swa_start is not None:
        # SWA (Izmailov et al. 2018): the schedule anneals to swa_lr by swa_start, then holds it
        # while the weights are averaged once per epoch
        anneal_end = max(warm + 1, cfg.swa_start * steps_per_epoch)
        floor = cfg.swa_lr / cfg.lr

        def swa_factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if step >= anneal_end:
                return floor
            cos = 0.5 * (1 + math.cos(math.pi * (step - warm) / (anneal_end - warm)))
            return floor + (1 - floor) * cos

        return swa_factor

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "onecycle":
            # triangular up for 30% of the run, cosine down to 0 (Smith & Topin 2019)
            up = max(1, int(0.3 * total))
            if step < up:
                return 0.04 + 0.96 * step / up
            return 0.5 * (1 + math.cos(math.pi * (step - up) / max(1, total - up)))
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return factor
