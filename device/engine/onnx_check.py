"""What an ONNX file must be before the device builds it: checked with the ``onnx`` package, whose
loader does not read external data unless asked, so a file that points outside itself is refused
before any byte of it is resolved.

Refused: files over the size cap, external data (weights in other files: paths an attacker
chooses) wherever a tensor can sit (``_all_tensors``), an opset outside the range the runtimes are
tested with, and anything but one float input of the manifest's shape (N x C x H x W, N free or
fixed) and at least one output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.errors import EdgeloopError

MIN_OPSET, MAX_OPSET = 13, 22


class OnnxRejectedError(EdgeloopError):
    """An ONNX file the device will not build; the message says why."""


def _dims(value_info: Any) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim
    ]


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph holds itself (initializers, sparse ones), not its nodes' attributes."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)


def _attribute_contents(attr: Any) -> tuple[list[Any], list[Any]]:
    """(tensors, subgraphs) of one node attribute, whatever its type (TENSOR(S), SPARSE_TENSOR(S), GRAPH(S))."""
    tensors = [attr.t] if attr.HasField("t") else []
    tensors += list(attr.tensors)
    for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
        tensors += [sparse.values, sparse.indices]
    graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
    return tensors, graphs


def _all_tensors(model: Any) -> Iterator[Any]:
    """Every tensor of the model, wherever it sits.

    Not only the main graph's initializers: Constant nodes and any other node attribute of a tensor
    type carry tensors, If/Loop/Scan bodies are graphs with their own initializers and nodes (nested
    to any depth), and local functions and training graphs have nodes too. Walked with an explicit
    stack, so a deeply nested file cannot exhaust Python's recursion.
    """
    graphs = [model.graph] + [g for info in model.training_info for g in (info.initialization, info.algorithm)]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from _graph_tensors(graph)
            nodes += graph.node
            continue
        for attr in nodes.pop().attribute:
            tensors, subgraphs = _attribute_contents(attr)
            yield from tensors
            graphs += subgraphs


def _external_tensors(model: Any) -> list[Any]:
    """Tensors whose bytes live in another file (flagged EXTERNAL, or carrying external_data entries)."""
    import onnx

    return [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data)]


def check(path: Path, input_shape: tuple[int, int, int], max_bytes: int) -> None:
    import onnx  # the device extra has it; imported here like every ONNX-touching helper

    size = path.stat().st_size
    if size > max_bytes:
        raise OnnxRejectedError(f"{path.name} is {size:,} bytes; the limit is {max_bytes:,}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise OnnxRejectedError(f"{path.name} is not a readable ONNX model: {str(e)[:300]}") from e
    external = [t.name or "(unnamed)" for t in _external_tensors(model)]
    if external:
        raise OnnxRejectedError(
            f"{path.name} keeps tensors in external files ({', '.join(external[:3])}): refused; "
            "export with all weights inside the .onnx file"
        )
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = opsets.get("ai.onnx")
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise OnnxRejectedError(f"{path.name} has opset {opset}; the device builds opsets {MIN_OPSET}-{MAX_OPSET}")
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or not model.graph.output:
        raise OnnxRejectedError(
            f"{path.name} has {len(inputs)} inputs and {len(model.graph.output)} outputs; "
            "edgeloop models have one image input and a logits output"
        )
    dims = _dims(inputs[0])
    if (
        inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
        or len(dims) != 4
        or tuple(dims[1:]) != input_shape
    ):
        raise OnnxRejectedError(
            f"{path.name} takes {dims} (type {inputs[0].type.tensor_type.elem_type}); "
            f"the release says float N x {' x '.join(map(str, input_shape))}"
        )
