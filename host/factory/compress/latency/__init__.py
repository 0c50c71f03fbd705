"""Pruning aimed at a latency measured on a named runtime (the ``prune_latency`` step).

* ``space``: what may change in a CIFAR ResNet (per-stage widths, whole residual blocks), and the
  pruned model of each architecture (Torch-Pruning, channels ranked by the criterion);
* ``timing``: ONNX files built and timed side by side on a registered runtime (``device.engine.bench``);
* ``meter``: an architecture measured: exported, quantized for INT8, built, timed, cached;
* ``search``: the greedy search from the current model down to the target latency.
"""
