"""TensorFlow runtime errors in one line: the message a person needs and the node, without the graph-building
traceback TF prepends ("Graph execution error: Detected at node X defined at (most recent call last): File ...")."""

from __future__ import annotations

import re

_NODE = re.compile(r"\{\{node ([^}]+)\}\}|Detected at node '?([A-Za-z0-9_.\-/]+)'?")


def tf_error_node(exc: BaseException) -> str:
    """The TF node the error names ('' when it names none)."""
    found = _NODE.search(str(exc))
    return (found.group(1) or found.group(2)) if found else ""


def tf_error_message(exc: BaseException) -> str:
    """The error's own message: for TF's graph execution errors the line before ``[[{{node ...}}]]`` (such as
    "Incompatible shapes: [1,529,16] vs. [1,576,16]"), else the first non-empty line."""
    lines = [line.strip() for line in str(exc).splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("[[") and "node" in line:
            before = [x for x in lines[:index] if x and not x.startswith('File "') and not x.endswith(":")]
            if before:
                return before[-1][:400]
    return next((line for line in lines if line), "")[:400]


def describe_tf_error(exc: BaseException) -> str:
    """`<Type>: <message> (TF node <node>)`."""
    node = tf_error_node(exc)
    return f"{type(exc).__name__}: {tf_error_message(exc)}" + (f" (TF node {node})" if node else "")
