"""What every network config shares: a dataclass that round-trips through a plain dict (checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Self


class DictConfig:
    """Mixin for a dataclass config: `to_dict`, and `from_dict` that names unknown keys."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {unknown}")
        return cls(**data)
