"""``device.engine.onnx_check``: what an ONNX file must be before the device builds it. Item 4 of issue 22:
external data (weights at paths the sender chooses) is refused wherever a tensor can sit, not only in
the main graph's initializers: Constant nodes, tensor and sparse-tensor attributes, sparse
initializers, subgraphs of If/Loop/Scan at any depth, local functions and training graphs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from device.engine.onnx_check import OnnxRejectedError, check

SHAPE = (3, 32, 32)
LIMIT = 64 << 20


def _external(name: str = "w", location: str = "../../../etc/shadow") -> TensorProto:
    """A float tensor whose bytes live in another file, at a path the sender chose."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[1])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        t.external_data.add(key=key, value=value)
    return t


def _inline(name: str = "w") -> TensorProto:
    return numpy_helper.from_array(np.ones(1, np.float32), name)


def _model(nodes: list[onnx.NodeProto], **graph_fields: object) -> onnx.ModelProto:
    """x (N x 3 x 32 x 32) -> nodes -> y, where the nodes must produce ``c`` (added to x)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SHAPE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *SHAPE])
    graph = helper.make_graph([*nodes, helper.make_node("Add", ["x", "c"], ["y"])], "g", [x], [y])
    for key, value in graph_fields.items():
        getattr(graph, key).extend(value)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _constant(tensor: TensorProto, out: str = "c") -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], value=tensor)


def _subgraph(nodes: list[onnx.NodeProto], out: str = "c", **graph_fields: object) -> onnx.GraphProto:
    c = helper.make_tensor_value_info(out, TensorProto.FLOAT, [1])
    graph = helper.make_graph(nodes, "sub", [], [c])
    for key, value in graph_fields.items():
        getattr(graph, key).extend(value)
    return graph


def _if(then: onnx.GraphProto, other: onnx.GraphProto) -> list[onnx.NodeProto]:
    cond = helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True]))
    return [cond, helper.make_node("If", ["cond"], ["c"], then_branch=then, else_branch=other)]


def _sparse(values: TensorProto) -> onnx.SparseTensorProto:
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "i")
    return helper.make_sparse_tensor(values, indices, [4])


def _save(model: onnx.ModelProto, tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _deep_if(depth: int) -> list[onnx.NodeProto]:
    inner = _subgraph([_constant(_external())])
    for _ in range(depth):
        inner = _subgraph(_if(inner, _subgraph([_constant(_inline())])))
    return _if(inner, _subgraph([_constant(_inline())]))


EXTERNAL_SOMEWHERE: dict[str, Callable[[], onnx.ModelProto]] = {
    "constant-node": lambda: _model([_constant(_external())]),
    "tensor-attribute-of-any-node": lambda: _model(
        [_constant(_inline()), helper.make_node("Identity", ["c"], ["unused"], extra=_external())]
    ),
    "tensors-attribute": lambda: _model(
        [_constant(_inline()), helper.make_node("Identity", ["c"], ["unused"], extra=[_inline("a"), _external("b")])]
    ),
    "sparse-tensor-attribute": lambda: _model(
        [helper.make_node("Constant", [], ["c"], sparse_value=_sparse(_external()))]
    ),
    "sparse-initializer": lambda: _model([_constant(_inline())], sparse_initializer=[_sparse(_external("s"))]),
    "if-then-branch": lambda: _model(_if(_subgraph([_constant(_external())]), _subgraph([_constant(_inline())]))),
    "if-else-branch-initializer": lambda: _model(
        _if(
            _subgraph([_constant(_inline())]),
            _subgraph([helper.make_node("Identity", ["w"], ["c"])], initializer=[_external("w")]),
        )
    ),
    "if-nested-five-deep": lambda: _model(_deep_if(5)),
    "graphs-attribute": lambda: _model(
        [_constant(_inline()), helper.make_node("Identity", ["c"], ["u"], bodies=[_subgraph([_constant(_external())])])]
    ),
    "local-function": lambda: _with_function(_model([_constant(_inline())])),
    "training-graph": lambda: _with_training(_model([_constant(_inline())])),
}


def _with_function(model: onnx.ModelProto) -> onnx.ModelProto:
    fn = helper.make_function("custom", "F", [], ["out"], [_constant(_external(), "out")], [model.opset_import[0]])
    model.functions.append(fn)
    return model


def _with_training(model: onnx.ModelProto) -> onnx.ModelProto:
    info = model.training_info.add()
    info.initialization.CopyFrom(_subgraph([_constant(_external())]))
    return model


@pytest.mark.security
@pytest.mark.parametrize("where", sorted(EXTERNAL_SOMEWHERE))
def test_external_data_is_refused_wherever_it_sits(tmp_path: Path, where: str) -> None:
    path = _save(EXTERNAL_SOMEWHERE[where](), tmp_path)
    with pytest.raises(OnnxRejectedError, match=r"external"):
        check(path, SHAPE, LIMIT)


@pytest.mark.security
def test_external_initializers_are_still_refused(tmp_path: Path) -> None:
    model = _model([helper.make_node("Identity", ["w"], ["c"])], initializer=[_external("w")])
    with pytest.raises(OnnxRejectedError, match=r"external"):
        check(_save(model, tmp_path), SHAPE, LIMIT)


def test_the_same_models_with_inline_data_pass(tmp_path: Path) -> None:
    sub = _subgraph([_constant(_inline())])
    check(_save(_model(_if(sub, sub)), tmp_path), SHAPE, LIMIT)
    check(_save(_model([_constant(_inline())], sparse_initializer=[_sparse(_inline("s"))]), tmp_path), SHAPE, LIMIT)


def test_the_zoo_model_passes(zoo_onnx: Path) -> None:
    check(zoo_onnx, SHAPE, LIMIT)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (lambda: _model([_constant(_inline())]).__class__(), r"opset None"),
        (lambda: _opset(_model([_constant(_inline())]), 9), r"opset 9"),
    ],
)
def test_opsets_outside_the_range_are_refused(tmp_path: Path, model: Callable[[], onnx.ModelProto], match: str) -> None:
    with pytest.raises(OnnxRejectedError, match=match):
        check(_save(model(), tmp_path), SHAPE, LIMIT)


def _opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    model.opset_import[0].version = version
    return model


def test_a_wrong_input_shape_and_the_size_cap_are_refused(tmp_path: Path) -> None:
    path = _save(_model([_constant(_inline())]), tmp_path)
    with pytest.raises(OnnxRejectedError, match=r"the release says float N x 3 x 64 x 64"):
        check(path, (3, 64, 64), LIMIT)
    with pytest.raises(OnnxRejectedError, match=r"the limit is 10"):
        check(path, SHAPE, 10)
