"""Built-in converters, one family per module; importing this package registers them all."""

from __future__ import annotations

from bridge.native.ops import (activation, attention, conv, elementwise, linear, norm, pool, reduce,  # noqa: F401
                              shape)
