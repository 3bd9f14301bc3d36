"""Built-in converters, one family per module; importing this package registers them all."""

from __future__ import annotations

from bridge.native.ops import (activation, attention, conv, creation, elementwise, indexing, linear, norm,  # noqa: F401
                              pool, recurrent, reduce, sampling, shape)
