"""BatchNorm folding: every Conv -> BN pair becomes one Conv with adjusted weights and bias.

Uses torch's own fusion (``torch.fx.experimental.optimization.fuse``, which traces the model and
calls ``fuse_conv_bn_eval`` on each Conv -> BN edge), so no weight arithmetic is written here.
"""

from __future__ import annotations

import copy
import logging

from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from shared.errors import EdgeloopError

log = logging.getLogger(__name__)


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fold_bn(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every Conv->BN pair folded; the input is untouched."""
    before = count_bn(model)
    try:
        folded: nn.Module = fuse(copy.deepcopy(model).eval(), inplace=True)
    except Exception as e:  # fx tracing raises many types on dynamic control flow
        raise EdgeloopError(f"cannot trace the model to fold BatchNorm: {e}") from e
    left = count_bn(folded)
    log.info("folded %d BatchNorm layers into convolutions (%d left)", before - left, left)
    return folded


def is_traceable(model: nn.Module) -> bool:
    try:
        fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001  (any failure means "not traceable")
        return False
    return True
