"""Dynamic sizes in generated code: torch.export's symbolic sizes (sympy expressions over the inputs' dynamic
dimensions, such as `s1`, `2*s1` or `((s2 - 1)//2) + 1`, and comparisons of them, such as a torch.cond predicate
`s1 > 4`) rendered as TensorFlow int32 arithmetic on `tf.shape(<input>)[axis]`, so the generated model computes
every size from its inputs at run time."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import sympy
from torch.utils._sympy import functions as symfn

from bridge.errors import ConversionError
from bridge.native.ir import Size, static_size

_FLOOR_DIV = (symfn.FloorDiv, symfn.CleanDiv)
_MOD = (symfn.Mod, symfn.PythonMod)
_RELATIONS = {sympy.StrictGreaterThan: ">", sympy.GreaterThan: ">=", sympy.StrictLessThan: "<",
              sympy.LessThan: "<=", sympy.Eq: "==", sympy.Ne: "!="}


def render_size(size: Size, symbols: Mapping[Any, str], where: str = "") -> str:
    """Python/TF source computing `size`: an int literal, or int32 arithmetic on the names `symbols` gives each
    input symbol (e.g. {s0: "input_ids_size1"}). Raises ConversionError for expressions it cannot spell."""
    if size is None:
        raise ConversionError("a size unknown to torch.export was needed in the generated model",
                              stage="rebuild-tf", details=[where] if where else [],
                              hint="give the dimension a static size, or convert with the ONNX route (route='onnx')")
    fixed = static_size(size)
    if fixed is not None:
        return str(fixed)
    return _Renderer(symbols, where).render(sympy.sympify(size))


class _Renderer:
    def __init__(self, symbols: Mapping[Any, str], where: str) -> None:
        self.symbols = symbols
        self.where = where

    def render(self, expr: sympy.Expr) -> str:
        if expr.is_Integer:
            return str(int(expr))
        if expr.is_Symbol:
            if expr not in self.symbols:
                raise self._error(expr, f"the size {expr} is not a dimension of any model input")
            return self.symbols[expr]
        handler = self._handler(expr)
        if handler is None:
            raise self._error(expr, f"cannot compute the symbolic size {expr} in TensorFlow")
        return handler(expr)

    def _handler(self, expr: sympy.Expr) -> Callable[[sympy.Expr], str] | None:
        if isinstance(expr, sympy.Add):
            return lambda e: "(" + " + ".join(self.render(a) for a in e.args) + ")"
        if isinstance(expr, sympy.Mul) and all(a.is_integer for a in expr.args):
            return lambda e: "(" + " * ".join(self.render(a) for a in e.args) + ")"
        if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) > 0:
            return lambda e: "(" + " * ".join([self.render(e.base)] * int(e.exp)) + ")"
        if isinstance(expr, _FLOOR_DIV):
            return lambda e: f"({self.render(e.args[0])} // {self.render(e.args[1])})"
        if isinstance(expr, symfn.CeilDiv):
            return lambda e: f"(-(-{self.render(e.args[0])} // {self.render(e.args[1])}))"
        if isinstance(expr, _MOD):
            return lambda e: f"({self.render(e.args[0])} % {self.render(e.args[1])})"
        if isinstance(expr, sympy.core.relational.Relational):
            return lambda e: f"({self.render(e.lhs)} {_RELATIONS[type(e)]} {self.render(e.rhs)})"
        if isinstance(expr, (sympy.And, sympy.Or)):
            fn = "tf.logical_and" if isinstance(expr, sympy.And) else "tf.logical_or"
            return lambda e: self._fold(fn, [self.render(a) for a in e.args])
        if isinstance(expr, sympy.Not):
            return lambda e: f"tf.logical_not({self.render(e.args[0])})"
        if expr in (sympy.true, sympy.false):
            return lambda e: f"tf.constant({bool(e)})"
        if isinstance(expr, (symfn.Max, symfn.Min, sympy.Max, sympy.Min)):
            fn = "tf.maximum" if isinstance(expr, (symfn.Max, sympy.Max)) else "tf.minimum"
            return lambda e: self._fold(fn, [self.render(a) for a in e.args])
        return None

    @staticmethod
    def _fold(fn: str, parts: list[str]) -> str:
        text = parts[0]
        for part in parts[1:]:
            text = f"{fn}({text}, {part})"
        return text

    def _error(self, expr: sympy.Expr, message: str) -> ConversionError:
        details = [self.where] if self.where else []
        return ConversionError(message, stage="rebuild-tf", details=details,
                               hint="give the dimension a static size in the input spec, or convert with the ONNX "
                                    "route (route='onnx')")
