"""`saerl-zoo find --model M`: which known SAEs can read model M, closest first.

Three tiers, from the zoo's catalog and sae-lens's directory (`directory.py`),
with hosts matched by `families.parse_model_id`:

1. the exact model;
2. the same pretrained checkpoint with other post-training (base <-> instruct,
   base <-> R1-distill): the residual stream barely moves under fine-tuning, so
   the SAE is used as is on M;
3. the same family at another size or line (e.g. Qwen2.5 <-> Qwen2.5-Math): the
   widths differ, so the SAE is carried over with a stitch (`saerl-zoo transfer
   fit`); a stitch maps the residual stream after a block, so only such SAEs
   (site resid_post) are suggested here.

SAEs that `load_sae` would refuse (pickle files, transcoders, a hook the
resolver cannot place) are left out unless asked for, and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from saerl_zoo.zoo.directory import SaeRow, all_rows, hook_matcher
from saerl_zoo.zoo.families import ModelName, parse_model_id

TIERS = {1: "exact model", 2: "same model, other post-training", 3: "same family, other size or line"}


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """One SAE for the asked model: how close its host is (`tier`), and how to use it (`note`)."""

    tier: int
    row: SaeRow
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "relation": TIERS[self.tier], "note": self.note, **self.row.to_dict()}


def _tuning(name: ModelName) -> str:
    return name.tuning or "base"


def _tier(want: ModelName, host: ModelName) -> int | None:
    if want.family != host.family:
        return None
    if want == host:
        return 1
    return 2 if want.same_weights_lineage(host) else 3


def _note(tier: int, want_id: str, want: ModelName, row: SaeRow, host: ModelName) -> str:
    if tier == 1:
        return "trained on this model"
    if tier == 2:
        return f"use as is: {row.model} is the {_tuning(host)} model of the same checkpoint ({_tuning(want)} here)"
    host_arg = "" if row.source == "zoo" else f" --from {row.model}"
    return f"carry over: saerl-zoo transfer fit --sae NAME{host_arg} --to {want_id} --corpus TEXTS.jsonl --out DIR"


def suggest_saes(model_id: str, *, hook: str | None = None, include_refused: bool = False, source: str = "all",
                 catalog: Any = None) -> tuple[list[Suggestion], int]:
    """Suggestions for `model_id`, tier by tier (loadable, catalog and residual-stream SAEs first within a tier),
    and how many SAEs of those tiers were left out as refused by `load_sae` (0 with `include_refused`)."""
    want = parse_model_id(model_id)
    keep = hook_matcher(hook) if hook else None
    found, refused = [], 0
    for row in all_rows(source, "sae", catalog):
        host = parse_model_id(row.model)
        tier = _tier(want, host)
        if tier is None or (keep is not None and not keep(row)) or (tier == 3 and row.site != "resid_post"):
            continue
        if row.problem is not None and not include_refused:
            refused += 1
            continue
        found.append(Suggestion(tier, row, _note(tier, model_id, want, row, host)))
    found.sort(key=lambda s: (s.tier, s.row.problem is not None, s.row.source != "zoo", s.row.site != "resid_post", s.row.model,
                              s.row.release or "", s.row.layer if s.row.layer is not None else -1, s.row.name))
    return found, refused
