"""The search space of latency-targeted pruning: per-stage widths and whole blocks of a CIFAR ResNet.

An architecture (``Arch``) says, for each of the three stages (32x32, 16x16, 8x8 at CIFAR size):

* ``shrink``: how many ``round_to`` steps every channel group of the stage has lost: its residual
  width (the stem or downsampling shortcut, every block output and what reads it) and the inner
  width of each of its blocks. A stage's groups shrink together, so the search moves per-stage
  ratios; no group goes below ``round_to`` nor loses more than ``max_layer_ratio`` of its width.
* ``dropped``: how many of its removable blocks are gone. Removable are the blocks with an identity
  shortcut and stride 1 (all of stage 1, all but the first of stages 2 and 3); they go least
  important first, so the count says which.

``build`` makes the pruned copy of the model: blocks removed, then each channel group cut to its
width on the channels the criterion ranks lowest (Torch-Pruning's dependency graph rewrites every
coupled layer). MACs come from the widths, without building.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from host.factory.compress.latency.search import Move
from host.factory.compress.prune import Criterion, channel_importance, classifier_layers, example_input
from host.factory.layout import contiguous
from host.factory.models.resnet import BasicBlock, CifarResNet
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

STAGES = ("layer1", "layer2", "layer3")


@dataclass(frozen=True)
class Arch:
    """Per stage: ``round_to`` steps removed from every channel group, and removable blocks dropped."""

    shrink: tuple[int, int, int] = (0, 0, 0)
    dropped: tuple[int, int, int] = (0, 0, 0)

    def label(self) -> str:
        return f"shrink {'/'.join(map(str, self.shrink))} drop {'/'.join(map(str, self.dropped))}"


@dataclass(frozen=True)
class StageShape:
    """One stage of an architecture: residual width, inner width of each block kept, and resolution."""

    side: int
    width: int
    mids: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"resolution": f"{self.side}x{self.side}", "width": self.width, "mid": list(self.mids)}


def block_importance(block: BasicBlock, criterion: Criterion) -> float:
    """How much a block's residual branch adds: its last BN's mean |scale| (bn_scale), or the mean
    L1 norm of its BN-folded last convolution's filters (l1). A block near zero is an identity."""
    bn = block.bn2
    if criterion == "bn_scale":
        return float(bn.weight.detach().abs().mean())
    var = bn.running_var if bn.running_var is not None else torch.ones_like(bn.weight)
    scale = (bn.weight.detach() / torch.sqrt(var + bn.eps)).abs()
    return float((block.conv2.weight.detach().abs().sum(dim=(1, 2, 3)) * scale).mean())


def _removable(block: BasicBlock) -> bool:
    return isinstance(block.shortcut, nn.Identity) and block.conv1.stride == (1, 1)


def _bump(counts: tuple[int, int, int], stage: int) -> tuple[int, int, int]:
    a, b, c = counts
    return (a + (stage == 0), b + (stage == 1), c + (stage == 2))


def _stage_of(module_name: str) -> int:
    """Stage index of a layer by name: the stem feeds stage 1 at full resolution."""
    head = module_name.split(".", maxsplit=1)[0]
    return STAGES.index(head) if head in STAGES else 0


class ResNetSpace:
    """The architectures reachable from ``model`` by per-stage shrinking and block removal."""

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion,
        round_to: int = 8,
        max_layer_ratio: float = 0.75,
        remove_blocks: bool = True,
        input_size: int = 32,
    ) -> None:
        if not isinstance(model, CifarResNet):
            raise EdgeloopError(
                f"prune_latency works on the CIFAR ResNets (stages of residual blocks), not {type(model).__name__}"
            )
        self.model = contiguous(model).eval()
        self.criterion: Criterion = criterion
        self.round_to = round_to
        self.max_layer_ratio = max_layer_ratio
        self.input_size = input_size
        self.classes = model.fc.out_features
        stages = [self._blocks(s) for s in range(len(STAGES))]
        if not all(stages[1:]):
            raise EdgeloopError("every stage but the first needs its downsampling block")
        self._width = [model.conv1.out_channels] + [blocks[0].conv2.out_channels for blocks in stages[1:]]
        self._mids = [[b.conv1.out_channels for b in blocks] for blocks in stages]
        # removable blocks of each stage, least important first: the order they are dropped in
        self._order = [self._drop_order(blocks) if remove_blocks else [] for blocks in stages]
        self._built: dict[Arch, nn.Module] = {}

    def _blocks(self, stage: int) -> list[BasicBlock]:
        layer = getattr(self.model, STAGES[stage])
        modules = list(layer) if isinstance(layer, nn.Sequential) else [layer]
        blocks = [b for b in modules if isinstance(b, BasicBlock)]
        if len(blocks) != len(modules):
            raise EdgeloopError(f"{STAGES[stage]} of the model is not a sequence of residual blocks")
        return blocks

    def _drop_order(self, blocks: list[BasicBlock]) -> list[int]:
        removable = [i for i, b in enumerate(blocks) if _removable(b)]
        return sorted(removable, key=lambda i: block_importance(blocks[i], self.criterion))

    def start(self) -> Arch:
        return Arch()

    # -- widths ---------------------------------------------------------------------------------
    def width_after(self, width: int, steps: int) -> int:
        """A group of ``width`` channels after ``steps`` round_to steps: a multiple of round_to, within the caps."""
        if steps == 0:
            return width
        r = self.round_to
        floor = min(width, max(r, math.ceil(width * (1 - self.max_layer_ratio) / r) * r))
        return max(floor, (width - steps * r) // r * r)

    def kept_blocks(self, arch: Arch, stage: int) -> list[int]:
        gone = set(self._order[stage][: arch.dropped[stage]])
        return [i for i in range(len(self._mids[stage])) if i not in gone]

    def shapes(self, arch: Arch) -> list[StageShape]:
        k = arch.shrink
        return [
            StageShape(
                self.input_size >> s,
                self.width_after(self._width[s], k[s]),
                tuple(self.width_after(self._mids[s][i], k[s]) for i in self.kept_blocks(arch, s)),
            )
            for s in range(len(STAGES))
        ]

    def renamed(self, arch: Arch, name: str) -> str | None:
        """The name in ``build(arch)`` of the model's layer ``name`` (blocks renumber), None if it is removed."""
        head, _, rest = name.partition(".")
        if head not in STAGES or not rest:
            return name
        index, _, tail = rest.partition(".")
        kept = self.kept_blocks(arch, STAGES.index(head))
        if not index.isdigit() or int(index) not in kept:
            return None
        return ".".join(p for p in (head, str(kept.index(int(index))), tail) if p)

    def describe(self, arch: Arch) -> list[dict[str, Any]]:
        return [{**shape.describe(), "blocks": len(shape.mids)} for shape in self.shapes(arch)]

    def short(self, arch: Arch) -> str:
        """E.g. ``16x3 24x2 64x3``: residual width x blocks, per stage."""
        return " ".join(f"{st.width}x{len(st.mids)}" for st in self.shapes(arch))

    def macs(self, arch: Arch) -> int:
        """Multiply-accumulates of one image (convolutions and the classifier), from the widths alone."""
        shapes = self.shapes(arch)
        total, c_in = 3 * shapes[0].width * 9 * self.input_size**2, shapes[0].width  # the stem
        for s, st in enumerate(shapes):
            pixels = st.side**2
            for j, mid in enumerate(st.mids):
                downsample = s > 0 and j == 0
                total += (c_in * mid + mid * st.width) * 9 * pixels + (c_in * st.width * pixels if downsample else 0)
                c_in = st.width
            c_in = st.width
        return total + c_in * self.classes

    # -- moves ----------------------------------------------------------------------------------
    def moves(self, arch: Arch) -> list[Move[Arch]]:
        """Every one-step change: shrink one stage by a round_to step, or drop its least important block."""
        out: list[Move[Arch]] = []
        for s, st in enumerate(self.shapes(arch)):
            k = arch.shrink[s]
            groups = [self._width[s]] + [self._mids[s][i] for i in self.kept_blocks(arch, s)]
            if any(self.width_after(w, k + 1) < self.width_after(w, k) for w in groups):
                out.append(Move(f"shrink {st.side}x{st.side}", replace(arch, shrink=_bump(arch.shrink, s))))
        for s in range(len(STAGES)):
            n = arch.dropped[s]
            if n < len(self._order[s]):
                out.append(Move(f"drop {STAGES[s]}.{self._order[s][n]}", replace(arch, dropped=_bump(arch.dropped, s))))
        return out

    # -- the pruned model -----------------------------------------------------------------------
    def build(self, arch: Arch) -> nn.Module:
        """The pruned copy of the model for ``arch`` (cached; the model itself is never changed)."""
        if arch not in self._built:
            model = copy.deepcopy(self.model)
            for s, name in enumerate(STAGES):
                blocks = self._blocks(s)
                setattr(model, name, nn.Sequential(*[copy.deepcopy(blocks[i]) for i in self.kept_blocks(arch, s)]))
            if any(arch.shrink):
                self._prune_channels(model, arch)
            self._built[arch] = model.eval()
        return self._built[arch]

    def _prune_channels(self, model: nn.Module, arch: Arch) -> None:
        """Cut every channel group to its width, on the channels the criterion ranks lowest."""
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(self.input_size))
        names = {m: n for n, m in model.named_modules()}
        importance = channel_importance(self.criterion)
        plans: list[tuple[nn.Conv2d, list[int]]] = []
        groups = graph.get_all_groups(ignored_layers=classifier_layers(model), root_module_types=[nn.Conv2d])
        for group in groups:  # ranked before anything is cut, so no group's ranking sees another's cut
            root = group[0].dep.target.module
            width = root.out_channels
            keep = self.width_after(width, arch.shrink[_stage_of(names[root])])
            if keep < width:
                scores = importance(group)
                if scores is None:
                    raise EdgeloopError(f"{self.criterion} ranks no channel of {names[root]}")
                plans.append((root, torch.argsort(scores)[: width - keep].tolist()))
        for root, idxs in plans:
            graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs).prune()
