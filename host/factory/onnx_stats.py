"""Parameters and MACs of an ONNX graph (also Q/DQ and FP16 graphs).

No maintained library counts MACs for quantized ONNX graphs (onnx-tool and friends skip or
mis-count Q/DQ weights), so this walks the graph by hand: shape inference at batch 1, then
Conv/ConvTranspose/Gemm/MatMul are counted with weights traced through DequantizeLinear/Cast.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_PASS_THROUGH = {"DequantizeLinear", "Cast", "Identity", "Transpose"}


def _dims(vi: Any) -> list[int] | None:
    shape = vi.type.tensor_type.shape
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]
    return None if any(d <= 0 for d in dims) else dims


def onnx_params_macs(model: Any) -> tuple[int, int]:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m)
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    shapes: dict[str, list[int]] = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        d = _dims(vi)
        if d is not None:
            shapes[vi.name] = d
    producers = {out: n for n in m.graph.node for out in n.output}

    def weight_source(name: str) -> str | None:
        """Follow DequantizeLinear/Cast back to the initializer holding the weights."""
        seen = 0
        while name not in inits and name in producers and seen < 8:
            node = producers[name]
            if node.op_type not in _PASS_THROUGH:
                return None
            name, seen = node.input[0], seen + 1
        return name if name in inits else None

    weights: set[str] = set()
    macs = 0
    for node in m.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            srcs = [weight_source(i) for i in node.input[1:] if i]
            weights.update(s for s in srcs if s)
            w = inits.get(srcs[0]) if srcs and srcs[0] else shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if w is None or out is None:
                continue
            if node.op_type in ("Conv", "ConvTranspose"):
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
            else:  # Gemm/MatMul: every output element is a K-long dot product
                trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
                k = w[-1] if trans_b else w[0]
                macs += int(np.prod(out)) * int(k)
    params = int(sum(int(np.prod(inits[w])) for w in weights))
    return params, macs
