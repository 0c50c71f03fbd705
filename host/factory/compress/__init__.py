"""Compression: ``recipe`` validates a TOML list of steps, ``pipeline`` runs them on a ``context``.

Each step type is one module of ``steps/`` (a ``CompressionStep`` with its config model, found
through the registry in ``steps/base.py``). The modules beside it are the techniques the steps
use: ``prune`` (channels), ``sparsity`` (weights), ``half`` (FP16; INT8 is ``device.engine.calibration``) and ``qat``.
"""
