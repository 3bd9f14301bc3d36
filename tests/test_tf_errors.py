"""TensorFlow runtime errors shown to a user in one line: the message and the node, without TF's graph-building
traceback."""

from __future__ import annotations

import pytest

from bridge.util.quiet import import_tensorflow
from bridge.util.tf_errors import describe_tf_error, tf_error_message, tf_error_node

tf = import_tensorflow(False)


def _graph_error() -> Exception:
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32)])
    def add(a, b):  # type: ignore[no-untyped-def]
        return tf.add(a, b, name="the_add")

    try:
        add(tf.zeros([3]), tf.zeros([4]))
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("adding shapes [3] and [4] must fail")


def test_graph_execution_error_keeps_the_message_and_the_node() -> None:
    exc = _graph_error()
    assert str(exc).lstrip().startswith("Graph execution error"), "TF's own text starts with its header"
    message = tf_error_message(exc)
    assert "Incompatible shapes" in message and "File" not in message
    assert tf_error_node(exc).endswith("the_add")
    assert describe_tf_error(exc).startswith("InvalidArgumentError: Incompatible shapes")


@pytest.mark.parametrize("text,message,node", [
    ("plain failure\nsecond line", "plain failure", ""),
    ("\n\nafter blanks", "after blanks", ""),
])
def test_other_errors_give_their_first_line(text: str, message: str, node: str) -> None:
    exc = ValueError(text)
    assert tf_error_message(exc) == message and tf_error_node(exc) == node
