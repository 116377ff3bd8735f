"""Rule tables: one small function per op kind, registered by decorator, duplicates refused."""

from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

R = TypeVar("R", bound=Callable)


class RuleTable(Generic[R]):
    """Maps op kinds to the rule computing one metric (in the manner of torch's flop registry)."""

    def __init__(self, metric: str):
        self.metric = metric
        self._rules: dict[str, R] = {}

    def register(self, *ops: str) -> Callable[[R], R]:
        def decorate(rule: R) -> R:
            for op in ops:
                if op in self._rules:
                    raise ValueError(f"{self.metric}: a rule for op {op!r} is already registered")
                self._rules[op] = rule
            return rule

        return decorate

    def register_constant(self, ops: Iterable[str], rule: R) -> None:
        """Register one rule for a family of ops (e.g. the ops that cost nothing)."""
        self.register(*ops)(rule)

    def get(self, op: str) -> R | None:
        return self._rules.get(op)

    def __contains__(self, op: str) -> bool:
        return op in self._rules

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(self._rules)
