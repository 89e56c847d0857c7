"""CLIP's text tower as an ONNX graph, for ONNX Runtime: the structure here, the weights passed in by name.

Why ONNX Runtime: a query is one short sequence, so the tower is memory-bound matrix-vector work over ~150 MB of
float32 weights, and ONNX Runtime's prepacked GEMMs run it 1.8x as fast as numpy's BLAS calls (side by side on
2 cores; benchmarks/RESULTS.md). It is already installed (chromadb depends on it) and imports in ~0.15 s.

Why the protobuf is written here: the ``onnx`` package's graph helpers import ml_dtypes, which alone costs
0.3-0.7 s, too much for a cold ``photosearch search``. The graph needs only a small, frozen part of the ONNX
format (onnx.proto: ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto), encoded below
in protobuf's wire format. The weights are not in the graph at all: each is a named external initializer that
the session takes straight from the memory-mapped safetensors arrays.

The graph computes what transformers' CLIP text model does for one query of T tokens, T <= pooled position + 1:
inputs ``x`` (token + position embeddings, [T, D]) and ``mask`` (the causal mask, [T, T]); output ``out``, the
projected (not yet normalised) embedding of the last row, [1, P].
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np

FLOAT, INT64 = 1, 7  # TensorProto.DataType
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7  # AttributeProto.AttributeType
IR_VERSION, OPSET = 8, 18


# -- protobuf wire format: varints, length-delimited fields and one fixed32 (a float attribute) -----------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are sent as their 64-bit two's complement
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(raw)) + raw


def _many(field: int, values: Iterable[bytes | str]) -> bytes:
    return b"".join(_bytes(field, value) for value in values)


def _attribute(name: str, value: float | int | list[int]) -> bytes:
    if isinstance(value, list):
        return _bytes(1, name) + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)
    if isinstance(value, float):
        return _bytes(1, name) + _varint(2 << 3 | 5) + struct.pack("<f", value) + _int(20, _ATTR_FLOAT)
    return _bytes(1, name) + _int(3, value) + _int(20, _ATTR_INT)


def _value_info(name: str, shape: Iterable[int | str]) -> bytes:
    """A float32 graph input or output; a str dimension is symbolic (set per query)."""
    dims = (_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in shape)
    tensor_type = _int(1, FLOAT) + _bytes(2, b"".join(dims))
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def _tensor(name: str, array: np.ndarray) -> bytes:
    """A small constant, stored in the graph."""
    elem = INT64 if array.dtype == np.int64 else FLOAT
    dims = b"".join(_int(1, d) for d in array.shape)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return dims + _int(2, elem) + _bytes(8, name) + _bytes(9, raw)


def _external(name: str, shape: tuple[int, ...]) -> bytes:
    """A float32 initializer whose data the session is given by name (SessionOptions.add_external_initializers)."""
    where = _bytes(1, "location") + _bytes(2, "memory")
    return b"".join(_int(1, d) for d in shape) + _int(2, FLOAT) + _bytes(8, name) + _bytes(13, where) + _int(14, 1)


class _Graph:
    """Collects nodes, constants and external weights; ``model()`` serialises them as an ONNX ModelProto."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.constants: dict[str, bytes] = {}  # name -> serialised TensorProto
        self.weights: dict[str, np.ndarray] = {}
        self._count = 0

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None,
           **attributes: float | int | list[int]) -> str:  # fmt: skip
        """Add a node; returns the name of its first output (outputs are named after it, ``name:1``, ...)."""
        self._count += 1
        name = name or f"{op_type}_{self._count}"
        names = [name] + [f"{name}:{i}" for i in range(1, outputs)]
        attrs = (_bytes(5, _attribute(key, value)) for key, value in attributes.items())
        self.nodes.append(_many(1, inputs) + _many(2, names) + _bytes(3, name) + _bytes(4, op_type) + b"".join(attrs))
        return name

    def const(self, name: str, value: np.ndarray | float) -> str:
        """A named constant (a float is a float32 scalar); the first definition of a name is kept."""
        if name not in self.constants:
            array = np.asarray(value, dtype=np.float32) if isinstance(value, float) else value
            self.constants[name] = _tensor(name, array)
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        self.weights[name] = np.ascontiguousarray(value, dtype=np.float32)
        return name

    def model(self, inputs: list[bytes], outputs: list[bytes]) -> bytes:
        externals = [_external(name, array.shape) for name, array in self.weights.items()]
        graph = (_many(1, self.nodes) + _bytes(2, "clip_text_tower") + _many(5, [*self.constants.values(), *externals])
                 + _many(11, inputs) + _many(12, outputs))  # fmt: skip
        opset = _bytes(1, "") + _int(2, OPSET)
        return _int(1, IR_VERSION) + _bytes(2, "photosearch") + _bytes(7, graph) + _bytes(8, opset)


# -- the tower ---------------------------------------------------------------------------------------------------
Linear = tuple[np.ndarray, np.ndarray]  # (weight [out, in] as stored by PyTorch, bias [out])


class Layer:
    """One encoder layer's weights, in PyTorch's layout (Gemm with transB reads them as they are stored)."""

    def __init__(self, ln1: Linear, q: Linear, k: Linear, v: Linear, out: Linear, ln2: Linear, fc1: Linear,
                 fc2: Linear) -> None:  # fmt: skip
        self.ln1, self.out, self.ln2, self.fc1, self.fc2 = ln1, out, ln2, fc1, fc2
        # q, k and v stacked: one GEMM instead of three (a copy of these three matrices, 3 MB a layer for ViT-B).
        self.qkv = np.concatenate([q[0], k[0], v[0]]), np.concatenate([q[1], k[1], v[1]])


def text_tower(layers: list[Layer], final: Linear, projection: np.ndarray, heads: int, eps: float,
               activation: str) -> tuple[bytes, dict[str, np.ndarray]]:  # fmt: skip
    """(the serialised ONNX model, its external weights by name). ``projection`` is [P, D], as stored."""
    g = _Graph()
    width = final[0].shape[0]
    head = width // heads
    g.const("qkv_shape", np.array([0, 3, heads, head], dtype=np.int64))
    g.const("rows_shape", np.array([-1, width], dtype=np.int64))
    g.const("scale", float(head**-0.5))
    g.const("last", np.array([-1], dtype=np.int64))
    g.const("end", np.array([1 << 62], dtype=np.int64))
    x = "x"
    for i, layer in enumerate(layers):
        p = f"layer{i}."
        h = _norm(g, x, layer.ln1, p + "ln1", eps)
        qkv = g.op("Transpose", g.op("Reshape", _linear(g, h, layer.qkv, p + "qkv"), "qkv_shape"), perm=[1, 2, 0, 3])
        q = g.op("Split", qkv, outputs=3, axis=0, num_outputs=3)  # [3, H, T, d] -> q, k, v: [1, H, T, d] each
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, g.op("Transpose", q + ":1", perm=[0, 1, 3, 2])), "scale"),
                      "mask")  # fmt: skip
        attended = g.op("MatMul", g.op("Softmax", scores, axis=-1), q + ":2")
        rows = g.op("Reshape", g.op("Transpose", attended, perm=[0, 2, 1, 3]), "rows_shape")
        x = g.op("Add", x, _linear(g, rows, layer.out, p + "out"))
        h = _activation(g, _linear(g, _norm(g, x, layer.ln2, p + "ln2", eps), layer.fc1, p + "fc1"), activation)
        x = g.op("Add", x, _linear(g, h, layer.fc2, p + "fc2"))
    pooled = _norm(g, g.op("Slice", x, "last", "end"), final, "final", eps)
    g.op("Gemm", pooled, g.weight("projection", projection), transB=1, name="out")
    model = g.model([_value_info("x", ["T", width]), _value_info("mask", ["T", "T"])],
                    [_value_info("out", [1, projection.shape[0]])])  # fmt: skip
    return model, g.weights


def _linear(g: _Graph, x: str, linear: Linear, name: str) -> str:
    return g.op("Gemm", x, g.weight(name + ".w", linear[0]), g.weight(name + ".b", linear[1]), transB=1)


def _norm(g: _Graph, x: str, norm: Linear, name: str, eps: float) -> str:
    return g.op("LayerNormalization", x, g.weight(name + ".w", norm[0]), g.weight(name + ".b", norm[1]), axis=-1,
                epsilon=float(eps))  # fmt: skip


def _activation(g: _Graph, x: str, kind: str) -> str:
    if kind == "quick_gelu":  # x * sigmoid(1.702 x)
        return g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, g.const("quick", 1.702))))
    # exact GELU: x/2 * (1 + erf(x / sqrt 2)); ONNX Runtime fuses the pattern into one Gelu kernel
    erf = g.op("Erf", g.op("Mul", x, g.const("rsqrt2", 0.5**0.5)))
    return g.op("Mul", g.op("Mul", x, g.const("half", 0.5)), g.op("Add", g.const("one", 1.0), erf))
