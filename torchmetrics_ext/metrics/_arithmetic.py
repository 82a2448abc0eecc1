"""Metric arithmetic (TorchMetrics' ``CompositionalMetric``) refused up front for metrics whose value is a dict.

TorchMetrics builds ``a - b``, ``m * 100``, ``abs(m)``, ... for any two metrics and applies the
operator to their ``compute()`` values only when the composed metric computes. A metric whose value
is a dict (``RankingMetrics``, ``Windowed``, ``Throughput``, ...) then failed there, after the
updates, inside torch (``sub(): argument 'input' (position 1) must be Tensor, not dict``), with
nothing naming the metric. The operators below refuse it where the expression is written, with a
``TypeError`` that names the metric and the way out: TorchMetrics' indexing, ``metric["ndcg@10"]``,
is a metric of one entry of the dict, and takes part in arithmetic like any other.

Equality (``==``, ``!=``) keeps TorchMetrics' behaviour: containers compare their items with it.
A TorchMetrics metric on the left (``torchmetrics.MeanSquaredError() - ranking``) builds the
expression with its own operator, which this class does not reach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

# operator method name -> how the user wrote it
_BINARY = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "truediv": "/",
    "floordiv": "//",
    "mod": "%",
    "pow": "**",
    "matmul": "@",
    "and": "&",
    "or": "|",
    "xor": "^",
}
_REFLECTED = {f"r{name}": symbol for name, symbol in _BINARY.items()}
_ORDERING = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_UNARY = {"abs": "abs()", "neg": "unary -", "pos": "unary +", "invert": "~", "inv": "~"}


class TensorArithmetic:
    """Mixin of the package's metrics: arithmetic with a dict-valued metric is a ``TypeError`` when written.

    A dict-valued class sets :attr:`_dict_value_entry` to an entry of its value, written as the
    index of ``metric[...]`` in the error's hint; a class that knows its entries from its settings
    (``_value_entries``) names its first one instead.
    """

    # an entry of compute()'s dict, as Python source (``'"window"'``); None: the value is a tensor
    _dict_value_entry: ClassVar[str | None] = None

    def _dict_value_example(self) -> str | None:
        """An index of ``metric[...]`` that picks one entry of the dict value; ``None`` for a tensor value."""
        if type(self)._dict_value_entry is None:
            return None
        entries = getattr(self, "_value_entries", None)
        keys = entries() if callable(entries) else None
        return f'"{keys[0]}"' if keys else type(self)._dict_value_entry


def _refuse_dict_values(symbol: str, *operands: Any) -> None:
    """Raise a ``TypeError`` naming the first operand whose ``compute()`` is a dict."""
    for operand in operands:
        example = operand._dict_value_example() if isinstance(operand, TensorArithmetic) else None
        if example is not None:
            name = type(operand).__name__
            raise TypeError(
                f"Metric arithmetic (`{symbol}`) needs metrics whose value is a tensor, but {name}.compute() "
                f"returns a dict. Pick one entry first: `metric[{example}]` is a metric of that entry "
                f"(`metric[{example}] * 100`), or combine the computed values."
            )


def _binary(name: str, symbol: str) -> Callable[..., Any]:
    def operator(self: TensorArithmetic, other: Any) -> Any:
        _refuse_dict_values(symbol, self, other)
        return getattr(super(TensorArithmetic, self), f"__{name}__")(other)

    operator.__name__ = operator.__qualname__ = f"__{name}__"
    operator.__doc__ = f"TorchMetrics' ``{symbol}`` of metrics, refused for a dict-valued operand."
    return operator


def _unary(name: str, symbol: str) -> Callable[..., Any]:
    def operator(self: TensorArithmetic) -> Any:
        _refuse_dict_values(symbol, self)
        return getattr(super(TensorArithmetic, self), f"__{name}__")()

    operator.__name__ = operator.__qualname__ = f"__{name}__"
    operator.__doc__ = f"TorchMetrics' ``{symbol}`` of a metric, refused for a dict value."
    return operator


for _name, _symbol in {**_BINARY, **_REFLECTED, **_ORDERING}.items():
    setattr(TensorArithmetic, f"__{_name}__", _binary(_name, _symbol))
for _name, _symbol in _UNARY.items():
    setattr(TensorArithmetic, f"__{_name}__", _unary(_name, _symbol))
