"""Weight matching for refit: may the weights of a new export be swapped into an existing engine?

TensorRT's ONNX parser names an engine's refittable weights after the ONNX initializers it was
built from, and ``OnnxParserRefitter`` looks the new ONNX's initializers up by those names. An
adapted model exported the same way has the same names and shapes; anything else (another
architecture, another width, another precision, a changed opset that renamed folded constants)
must be refused *before* touching the engine. The engine's manifest records the original ONNX's
initializers, so this check needs no TensorRT and is tested everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["WeightMatch", "match_refit_weights"]

WeightTable = Mapping[str, Mapping[str, Any]]  # name -> {"shape": [...], "dtype": "float16"}


@dataclass(frozen=True)
class WeightMatch:
    missing: tuple[str, ...]  # the engine has them, the new export does not
    unexpected: tuple[str, ...]  # the new export has them, the engine does not
    changed: tuple[tuple[str, str, str], ...]  # (name, engine's shape/dtype, new shape/dtype)
    matched: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.changed)

    def describe(self, limit: int = 3) -> str:
        if self.ok:
            return f"all {self.matched} weights match by name, shape and dtype"
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} engine weights missing from the new export ({', '.join(self.missing[:limit])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} new weights the engine does not have ({', '.join(self.unexpected[:limit])})")
        if self.changed:
            shown = ", ".join(f"{n}: engine {a} vs new {b}" for n, a, b in self.changed[:limit])
            parts.append(f"{len(self.changed)} weights changed shape or dtype ({shown})")
        return "; ".join(parts)


def _sig(entry: Mapping[str, Any]) -> str:
    return f"{list(entry.get('shape', []))} {entry.get('dtype', '?')}"


def match_refit_weights(engine_weights: WeightTable, new_weights: WeightTable, *,
                        refittable: set[str] | None = None) -> WeightMatch:
    """Compare the engine's recorded ONNX initializers with a new export's.

    ``refittable``: where TensorRT is at hand, the names ``IRefitter.get_all_weights()`` reports;
    each must be present in the new export with the recorded shape (others are informational).
    """
    names = set(engine_weights) if refittable is None else set(refittable) | set(engine_weights)
    missing = tuple(sorted(n for n in names if n not in new_weights))
    unexpected = tuple(sorted(n for n in new_weights if n not in names))
    changed = tuple(
        (n, _sig(engine_weights[n]), _sig(new_weights[n]))
        for n in sorted(names & set(new_weights))
        if n in engine_weights and _sig(engine_weights[n]) != _sig(new_weights[n])
    )
    matched = len(names & set(new_weights)) - len(changed)
    return WeightMatch(missing, unexpected, changed, matched)
