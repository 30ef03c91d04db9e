#!/usr/bin/env python
"""Write a real math prompt set that installs offline: CHAMP's competition problems plus reasoning-gym families.

Why: the bring-your-own-model demonstration (issue 15) needs prompts a user
would bring — natural-language math with reference answers, of graded
difficulty — without a download. CHAMP (`champ-dataset`, 270 competition
problems with final answers) is far beyond a 135M model; reasoning-gym's
arithmetic families at three difficulty settings give the easy end, where
pass rates differ. Each row has ``id``, ``prompt`` (the question and an
instruction to end with a boxed answer, which the ``math`` verifier reads),
``answer`` and ``source`` (the family; evaluation only).

Run:  python scripts/math_prompts.py --out runs/math_prompts.jsonl
(needs `champ-dataset` and `reasoning-gym`: pip install champ-dataset reasoning-gym)
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saerl_zoo.storage import write_jsonl  # noqa: E402

INSTRUCTION = "Solve the problem. Put the final answer in \\boxed{}."
# reasoning-gym datasets and (easy, medium, hard) settings of each
GYM_FAMILIES = {
    "basic_arithmetic": [dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
                         dict(min_terms=3, max_terms=3, min_digits=1, max_digits=2),
                         dict(min_terms=4, max_terms=5, min_digits=2, max_digits=3)],
    "chain_sum": [dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
                  dict(min_terms=3, max_terms=4, min_digits=1, max_digits=2),
                  dict(min_terms=5, max_terms=6, min_digits=2, max_digits=3)],
    "gcd": [dict(min_numbers=2, max_numbers=2, min_value=1, max_value=20),
            dict(min_numbers=2, max_numbers=2, min_value=20, max_value=200),
            dict(min_numbers=3, max_numbers=3, min_value=100, max_value=1000)],
}


def champ_rows() -> list[dict]:
    import champ_dataset

    dataset = champ_dataset.load("v0")
    return [{"id": f"champ-{pid}", "prompt": f"{p.text}\n{INSTRUCTION}", "answer": str(p.answer), "source": "champ"}
            for pid, p in sorted(dataset.problems.items())]


def gym_rows(per_setting: int, seed: int) -> list[dict]:
    import reasoning_gym

    rows = []
    for family, settings in GYM_FAMILIES.items():
        for level, setting in enumerate(settings, start=1):
            ds = reasoning_gym.create_dataset(family, size=per_setting, seed=seed * 1000 + level, **setting)
            for i, entry in enumerate(ds):
                question = entry["question"].split("\n")[0].strip() if family != "gcd" else entry["question"].strip()
                rows.append({"id": f"{family}-L{level}-{i}", "prompt": f"{question}\n{INSTRUCTION}",
                             "answer": str(entry["answer"]), "source": f"{family}/L{level}"})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-setting", type=int, default=60, help="reasoning-gym problems per family x difficulty setting")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = champ_rows() + gym_rows(args.per_setting, args.seed)
    random.Random(args.seed).shuffle(rows)
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} prompts to {args.out}")


if __name__ == "__main__":
    main()
