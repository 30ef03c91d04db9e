#!/usr/bin/env python
"""A saerl-zoo prompt file (JSONL with "prompt" and "answer") as the parquet veRL trains on, rows in the same order.

    python adapters/verl/prepare_data.py --prompts runs/gpu_recipe/artifacts/pool.jsonl --field question --out data/train.parquet

Each row gets veRL's columns: ``prompt`` (one user message; veRL applies the model's chat template),
``reward_model.ground_truth`` (the answer, for ``reward_fn.py``) and ``extra_info.index`` = the row's
position, which is how the SaeRL sampler matches rewards to prompts. The curriculum must score
exactly these rows, in this order: build it from the same ``--prompts`` file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def verl_rows(rows: list[dict], field: str) -> list[dict]:
    return [
        {
            "data_source": "saerl",
            "prompt": [{"role": "user", "content": row[field]}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(row["answer"])},
            "extra_info": {"index": i},
        }
        for i, row in enumerate(rows)
    ]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, help="JSONL with the field below and 'answer' (default: the embedded pool)")
    parser.add_argument("--field", default="prompt", help="the text the policy reads, without chat template (default: prompt)")
    parser.add_argument("--out", type=Path, required=True, help="the parquet file to write")
    args = parser.parse_args(argv)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from saerl_zoo.data import load_rows
    from saerl_zoo.embedded import default_path
    from saerl_zoo.storage import atomic_path

    rows = load_rows(args.prompts or default_path("prompts.jsonl"), args.field)
    with atomic_path(args.out) as tmp:
        pq.write_table(pa.Table.from_pylist(verl_rows(list(rows), args.field)), tmp)
    print(f"wrote {len(rows)} rows to {args.out}")
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
