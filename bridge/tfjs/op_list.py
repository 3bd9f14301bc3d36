"""The TF ops the TF.js 4.22.0 graph-model runtime maps (its `op_list/*.json`), and the check against them.

Being on this list is necessary, not sufficient: a few ops lack kernels on some backends, which only running the
model in the real runtime shows. Ragged and TF-DF ops are on the Python converter's list but 4.22.0's JS runtime does
not map them, so they are listed apart and refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from tensorflow.core.framework import graph_pb2

from bridge.errors import UnsupportedOpsError
from bridge.tfjs.graph_names import iter_all_nodes

OPS_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "arithmetic": (
        "Add", "AddV2", "AddN", "BiasAdd", "Sub", "RealDiv", "Div", "DivNoNan", "FloorDiv", "Mul", "Maximum",
        "Minimum", "Pow", "SquaredDifference", "Mod", "FloorMod"),
    "basic_math": (
        "Abs", "Acos", "Asin", "Atan", "Atan2", "Ceil", "ClipByValue", "Complex", "ComplexAbs", "Cos", "Cosh", "Elu",
        "Exp", "Floor", "Log", "Imag", "Neg", "Real", "Prelu", "Relu", "Relu6", "Selu", "Sigmoid", "Sin", "Sinh",
        "Sqrt", "Rsqrt", "Square", "Tan", "Tanh", "Sign", "Round", "Expm1", "Log1p", "Reciprocal", "Softplus",
        "Asinh", "Acosh", "Atanh", "Erf", "LeakyRelu", "IsNan", "IsFinite", "IsInf"),
    "control": (
        "EmptyTensorList", "LoopCond", "Switch", "Merge", "Enter", "Exit", "NextIteration", "TensorArrayV3",
        "TensorArrayWriteV3", "TensorArrayReadV3", "TensorArrayGatherV3", "TensorArrayScatterV3",
        "TensorArrayConcatV3", "TensorArraySplitV3", "TensorArraySizeV3", "TensorArrayCloseV3", "StatelessIf", "If",
        "StatelessWhile", "While", "TensorListScatter", "TensorListScatterV2", "TensorListGather",
        "TensorListGetItem", "TensorListSetItem", "TensorListReserve", "TensorListFromTensor", "TensorListStack",
        "TensorListSplit", "TensorListConcat", "TensorListConcatV2", "TensorListPopBack", "TensorListPushBack",
        "TensorListLength", "TensorListResize"),
    "convolution": (
        "AvgPool", "MaxPool", "MaxPoolWithArgmax", "AvgPool3D", "MaxPool3D", "Conv1D", "Conv2D", "_FusedConv2D",
        "Conv2DBackpropInput", "DepthwiseConv2d", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative", "Conv3D",
        "Dilation2D"),
    "creation": (
        "Fill", "LinSpace", "OneHot", "Ones", "OnesLike", "RandomStandardNormal", "RandomUniform", "RandomUniformInt",
        "Range", "TruncatedNormal", "Zeros", "ZerosLike", "Multinomial"),
    "dynamic": (
        "NonMaxSuppressionV2", "NonMaxSuppressionV3", "NonMaxSuppressionV4", "NonMaxSuppressionV5", "Where",
        "ListDiff"),
    "evaluation": ("LowerBound", "TopKV2", "UpperBound", "Unique", "UniqueV2"),
    "graph": (
        "PlaceholderWithDefault", "Placeholder", "Const", "Identity", "IdentityN", "Snapshot", "Rank", "Size",
        "Shape", "ShapeN", "Print", "NoOp", "StopGradient", "FakeQuantWithMinMaxVars"),
    "hash_table": (
        "HashTable", "HashTableV2", "LookupTableImport", "LookupTableImportV2", "LookupTableFind",
        "LookupTableFindV2", "LookupTableSize", "LookupTableSizeV2", "InitializeTable", "InitializeTableV2"),
    "image": ("ResizeBilinear", "ResizeNearestNeighbor", "CropAndResize", "ImageProjectiveTransformV3"),
    "logical": (
        "Equal", "NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd", "LogicalNot", "LogicalOr",
        "Select", "SelectV2", "BitwiseAnd"),
    "matrices": ("_FusedMatMul", "MatMul", "BatchMatMul", "BatchMatMulV2", "Transpose", "Einsum", "MatrixBandPart"),
    "normalization": (
        "EuclideanNorm", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "LRN", "Softmax", "LogSoftmax"),
    "reduction": (
        "Bincount", "DenseBincount", "Max", "Mean", "Min", "Sum", "All", "Any", "ArgMax", "ArgMin", "Prod",
        "Cumprod", "Cumsum"),
    "slice_join": (
        "ConcatV2", "Concat", "GatherV2", "Gather", "Reverse", "ReverseV2", "Slice", "StridedSlice", "Pack",
        "Unpack", "Tile", "Split", "SplitV", "ScatterNd", "GatherNd", "SparseToDense", "TensorScatterUpdate"),
    "sparse": ("SparseFillEmptyRows", "SparseReshape", "SparseSegmentMean", "SparseSegmentSum"),
    "spectral": ("FFT", "IFFT", "RFFT", "IRFFT"),
    "string": ("StaticRegexReplace", "StringNGrams", "StringSplit", "StringToHashBucketFast"),
    "transformation": (
        "Cast", "ExpandDims", "MirrorPad", "Pad", "PadV2", "Reshape", "EnsureShape", "Squeeze", "SpaceToBatchND",
        "BatchToSpaceND", "DepthToSpace", "BroadcastTo", "BroadcastArgs"),
}

# On the reference's list but not mapped by the 4.22.0 JS runtime: refused.
LISTED_BUT_UNMAPPED: tuple[str, ...] = (
    "RaggedGather", "RaggedRange", "RaggedTensorToTensor",
    "SimpleMLCreateModelResource", "SimpleMLLoadModelFromPathWithHandle", "SimpleMLInferenceOpWithHandle")

SUPPORTED_OPS: frozenset[str] = frozenset(op for ops in OPS_BY_CATEGORY.values() for op in ops)

# Debug ops grappler's debug_stripper removes (Print is also mapped by the runtime itself).
DEBUG_OPS: frozenset[str] = frozenset({"Assert", "CheckNumerics", "Print", "PrintV2"})

# Ops whose presence means the JS model must be run with executeAsync() (doc section 5).
ASYNC_OPS: frozenset[str] = frozenset({
    "Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond", "While", "StatelessWhile", "If", "StatelessIf",
    "NonMaxSuppressionV2", "NonMaxSuppressionV3", "NonMaxSuppressionV4", "NonMaxSuppressionV5", "Where", "ListDiff",
    "HashTable", "HashTableV2", "LookupTableFind", "LookupTableFindV2", "LookupTableImport", "LookupTableImportV2",
    "LookupTableSize", "LookupTableSizeV2", "InitializeTable", "InitializeTableV2",
    *(op for op in OPS_BY_CATEGORY["control"] if op.startswith(("TensorArray", "TensorList", "EmptyTensorList"))),
})


def unsupported_ops(graph_def: graph_pb2.GraphDef, *, allow: Iterable[str] = ()) -> dict[str, list[str]]:
    """Every op of the main graph and its library functions that TF.js 4.22.0 cannot run, mapped to the node names
    (``function/node`` inside library functions) using it, both sorted. `allow` adds ops tolerated at this step."""
    allowed = SUPPORTED_OPS | frozenset(allow)
    found: dict[str, list[str]] = {}
    for scope, node in iter_all_nodes(graph_def):
        if node.op not in allowed:
            found.setdefault(node.op, []).append(f"{scope}/{node.name}" if scope else node.name)
    return {op: sorted(names) for op, names in sorted(found.items())}


def check_ops(graph_def: graph_pb2.GraphDef, *, when: str, allow: Iterable[str] = ()) -> None:
    """Raise `UnsupportedOpsError` (stage ``tfjs-write``) listing every unsupported op with its nodes at once.

    `when` names the conversion step for the message (for example ``"after freezing"``)."""
    found = unsupported_ops(graph_def, allow=allow)
    if not found:
        return
    raise UnsupportedOpsError(
        f"{len(found)} op type(s) {when} are not supported by the TF.js 4.22.0 runtime: {', '.join(found)}",
        ops=found, stage="tfjs-write",
        hint="rewrite the model to avoid these ops (or export them differently), then convert again")


def needs_async(graph_def: graph_pb2.GraphDef) -> bool:
    """Whether the graph holds control flow or dynamic-shape ops that need ``executeAsync()`` in TF.js."""
    return any(node.op in ASYNC_OPS for _, node in iter_all_nodes(graph_def))
