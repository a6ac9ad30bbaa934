"""An encoder graph from a jar: checked, then wrapped into a tower the runtime serves.

The jars' graphs output the encoder's token embeddings (`last_hidden_state`, [batch,
sequence, dim]; all-MiniLM's adds a pooler output nobody should use). The runtime expects a
tower graph that outputs the sentence vector ([batch, dim], named `embedding`), as
`twinbert-search export` writes them, so pooling (CLS or masked mean) and L2 normalisation
are appended here as a few ONNX nodes and the other outputs dropped.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from twinbert_search.errors import ModelError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "embedding"
_P = "twinbert_pool/"  # prefix of every name this module adds


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def token_output(model: onnx.ModelProto, dim: int, *, source: str) -> str:
    """The name of the graph's [batch, sequence, dim] output, checking the inputs too."""
    names = [i.name for i in model.graph.input]
    missing = [n for n in INPUTS[:2] if n not in names]
    if missing:
        raise ModelError(f"{source}: the ONNX graph lacks the inputs {missing} (has {names})")
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) == 3:
            last = dims[2].dim_value
            if last and last != dim:
                raise ModelError(f"{source}: token embeddings are {last}-d, expected {dim}")
            return out.name
    shapes = {o.name: len(o.type.tensor_type.shape.dim) for o in model.graph.output}
    raise ModelError(
        f"{source}: no [batch, sequence, dim] token-embedding output in the ONNX graph "
        f"(outputs and their ranks: {shapes})"
    )


def _reduce(op: str, data: str, out: str, opset: int) -> list[onnx.NodeProto]:
    """`op` over axis 1, keepdims=0, in the opset's spelling (axes moved to an input at 13/18)."""
    if (op == "ReduceSum" and opset >= 13) or opset >= 18:
        axes = helper.make_node(
            "Constant",
            [],
            [out + "_axes"],
            value=helper.make_tensor(out + "_axes_v", TensorProto.INT64, [1], [1]),
        )
        return [axes, helper.make_node(op, [data, out + "_axes"], [out], keepdims=0)]
    return [helper.make_node(op, [data], [out], axes=[1], keepdims=0)]


def _const(name: str, value: float) -> onnx.NodeProto:
    tensor = helper.make_tensor(name + "_v", TensorProto.FLOAT, [], [value])
    return helper.make_node("Constant", [], [name], value=tensor)


def pooling_nodes(hidden: str, pooling: str, normalize: bool, opset: int) -> list[onnx.NodeProto]:
    """Nodes from token embeddings `hidden` to the sentence vector `OUTPUT`."""
    pooled = _P + "pooled" if normalize else OUTPUT
    if pooling == "cls":
        index = helper.make_tensor(_P + "zero_v", TensorProto.INT64, [], [0])
        nodes = [
            helper.make_node("Constant", [], [_P + "zero"], value=index),
            helper.make_node("Gather", [hidden, _P + "zero"], [pooled], axis=1),
        ]
    elif pooling == "mean":
        nodes = [
            helper.make_node("Unsqueeze", ["attention_mask"], [_P + "mask3"], axes=[2])
            if opset < 13
            else helper.make_node(
                "Unsqueeze", ["attention_mask", _P + "last_axis"], [_P + "mask3"]
            ),
            helper.make_node("Cast", [_P + "mask3"], [_P + "maskf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [hidden, _P + "maskf"], [_P + "masked"]),
            *_reduce("ReduceSum", _P + "masked", _P + "summed", opset),
            *_reduce("ReduceSum", _P + "maskf", _P + "count_raw", opset),
            _const(_P + "one_token", 1e-9),
            helper.make_node("Max", [_P + "count_raw", _P + "one_token"], [_P + "count"]),
            helper.make_node("Div", [_P + "summed", _P + "count"], [pooled]),
        ]
        if opset >= 13:
            axis = helper.make_tensor(_P + "last_axis_v", TensorProto.INT64, [1], [2])
            nodes.insert(0, helper.make_node("Constant", [], [_P + "last_axis"], value=axis))
    else:
        raise ModelError(f"pooling must be 'cls' or 'mean' for an imported tower, got {pooling!r}")
    if normalize:
        nodes += [
            helper.make_node("Mul", [pooled, pooled], [_P + "squares"]),
            *_reduce_last("ReduceSum", _P + "squares", _P + "sumsq", opset),
            helper.make_node("Sqrt", [_P + "sumsq"], [_P + "norm_raw"]),
            _const(_P + "eps", 1e-12),
            helper.make_node("Max", [_P + "norm_raw", _P + "eps"], [_P + "norm"]),
            helper.make_node("Div", [pooled, _P + "norm"], [OUTPUT]),
        ]
    return nodes


def _reduce_last(op: str, data: str, out: str, opset: int) -> list[onnx.NodeProto]:
    """`op` over the last axis of a [batch, dim] tensor, keepdims=1 (to divide by)."""
    if opset >= 13:
        axes = helper.make_node(
            "Constant",
            [],
            [out + "_axes"],
            value=helper.make_tensor(out + "_axes_v", TensorProto.INT64, [1], [-1]),
        )
        return [axes, helper.make_node(op, [data, out + "_axes"], [out], keepdims=1)]
    return [helper.make_node(op, [data], [out], axes=[-1], keepdims=1)]


def wrap_tower(
    src: str | Path | onnx.ModelProto,
    dst: str | Path,
    *,
    pooling: str,
    normalize: bool,
    dim: int,
    source: str = "",
) -> None:
    """Write `dst`: the encoder graph `src` ending in pooling (+ normalisation), one output.

    Input dimensions are renamed (batch, sequence): all-MiniLM's graph names both `batch`,
    which tells ONNX Runtime they are equal.
    """
    source = source or str(src)
    try:
        model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{source}: not an ONNX graph ({type(exc).__name__})") from None
    hidden = token_output(model, dim, source=source)
    graph = model.graph
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 2:
            dims[0].dim_param, dims[1].dim_param = "batch", "sequence"
    graph.node.extend(pooling_nodes(hidden, pooling, normalize, _opset(model)))
    out = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", dim])
    del graph.output[:]
    graph.output.append(out)
    onnx.checker.check_model(model)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
