"""A verifiable math task pool with known family, difficulty and quality.

Why this module exists: the SaeRL method orders RL prompts by diversity,
difficulty and quality, and judging whether it does that well needs a prompt
set whose structure is *known*.  Every problem here comes from a
`reasoning_gym` generator (so its reference answer is computed, not guessed),
belongs to one of a few task families, sits at one of three difficulty levels
set through the generator's own settings (digits, terms, value range), and a
controlled fraction of the pool is deliberately broken the way scraped RL data
is broken (wrong reference answers, truncated statements, near-duplicates,
off-topic text).

The pipeline only ever sees ``items`` (``id``, ``prompt``, ``answer``); the
ground truth (``family``, ``level``, ``quality``, ``defect``) is returned
separately and is meant for evaluation only.

Prompts use a compact template, ``"Q: <question>\\nA:"``, instead of
reasoning_gym's verbose instructions, because the embedded policy model is a
tiny from-scratch LM with a short context.  Answers are checked with
:func:`score`, a numeric / fraction-aware exact match that agrees with the
reasoning_gym scorers on the reference answers (see ``tests/test_tasks.py``).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from saerl_zoo.defects import near_duplicate, truncate

__all__ = [
    "DEFECTS",
    "FAMILIES",
    "LEVELS",
    "WORKED_FAMILIES",
    "WORKED_LEVELS",
    "WorkedProblem",
    "build_eval_set",
    "build_pool",
    "build_train_set",
    "build_worked_eval_set",
    "build_worked_pool",
    "build_worked_train_set",
    "evaluate_against_truth",
    "format_prompt",
    "final_answer",
    "score",
    "split_of",
    "worked_problems",
]

LEVELS: tuple[int, ...] = (1, 2, 3)
# Questions longer than this are skipped: the embedded LM has a tiny context.
MAX_QUESTION_CHARS = 56
# Kinds of low-quality prompt and their share of the broken part of the pool.
DEFECTS: dict[str, float] = {
    "wrong_answer": 0.30,  # reference answer is wrong: reward is noise
    "truncated": 0.30,  # statement cut off mid-way: unsolvable
    "near_duplicate": 0.20,  # copy of another pool prompt with a tiny edit
    "off_topic": 0.20,  # scraped noise text that is not a math problem
}
OFF_TOPIC_FAMILY = "off_topic"


def format_prompt(question: str) -> str:
    """The prompt template the policy sees; the answer follows after a space."""
    return f"Q: {question}\nA:"


# --------------------------------------------------------------------------
# Task families: reasoning_gym generator + per-level settings + compact wording


@dataclass(frozen=True)
class Family:
    """One task family: which reasoning_gym dataset, its 3 difficulty settings,
    and how to phrase an entry compactly from the entry's metadata."""

    rg_name: str
    levels: dict[int, dict[str, Any]]
    question: Callable[[dict[str, Any]], str]


def _numbers(md: dict[str, Any]) -> str:
    return ", ".join(str(x) for x in md["numbers"])


FAMILIES: dict[str, Family] = {
    "chain_sum": Family(
        "chain_sum",
        {
            1: dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
            2: dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2),
            3: dict(min_terms=3, max_terms=4, min_digits=2, max_digits=3),
        },
        lambda e: f"{e['metadata']['expression']} =",
    ),
    "basic_arithmetic": Family(
        "basic_arithmetic",
        {
            1: dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, operators=("+", "-", "*"),
                    allow_parentheses=False, allow_negation=False),
            2: dict(min_terms=3, max_terms=3, min_digits=1, max_digits=1, operators=("+", "-", "*", "/"),
                    allow_parentheses=False, allow_negation=False),
            3: dict(min_terms=3, max_terms=4, min_digits=1, max_digits=2, operators=("+", "-", "*", "/"),
                    allow_parentheses=True, allow_negation=True),
        },
        lambda e: e["question"],  # already compact: "Calculate <expr>."
    ),
    "products": Family(
        "products",
        {
            1: dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
            2: dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2),
            3: dict(min_terms=2, max_terms=2, min_digits=3, max_digits=3),
        },
        lambda e: "Multiply " + e["metadata"]["expression"].replace(" * ", " by ") + ".",
    ),
    "gcd": Family(
        "gcd",
        {
            1: dict(min_numbers=2, max_numbers=2, max_value=20),
            2: dict(min_numbers=2, max_numbers=2, max_value=100),
            3: dict(min_numbers=2, max_numbers=3, max_value=1000),
        },
        lambda e: f"GCD of {_numbers(e['metadata'])}?",
    ),
    "lcm": Family(
        "lcm",
        {
            1: dict(min_numbers=2, max_numbers=2, max_value=12),
            2: dict(min_numbers=2, max_numbers=2, max_value=30),
            3: dict(min_numbers=2, max_numbers=3, max_value=100),
        },
        lambda e: f"LCM of {_numbers(e['metadata'])}?",
    ),
    "fraction_simplification": Family(
        "fraction_simplification",
        {
            1: dict(max_value=9, max_factor=9, styles=("plain",)),
            2: dict(max_value=30, max_factor=15, styles=("plain",)),
            3: dict(max_value=100, max_factor=60, styles=("plain",)),
        },
        lambda e: f"Simplify {e['metadata']['numerator']}/{e['metadata']['denominator']}.",
    ),
    "count_bits": Family(
        "count_bits",
        {
            1: dict(min_n=1, max_n=127),
            2: dict(min_n=128, max_n=1023),
            3: dict(min_n=1024, max_n=65535),
        },
        lambda e: f"Count the set bits in {e['metadata']['number']}.",
    ),
}


# --------------------------------------------------------------------------
# Clean problem generation


def _stable_seed(*parts: object) -> int:
    """A seed that depends only on ``parts`` (Python's ``hash`` is salted per
    process, so it cannot be used for reproducible builds)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _cell_problems(stream: str, seed: int, family: str, level: int, count: int,
                   seen: set[str] | None = None) -> list[dict[str, Any]]:
    """``count`` clean problems of one (family, level) cell.

    ``stream`` ("pool", "eval", "train", ...) goes into the reasoning_gym seed,
    so the pool, the eval set and the LM's training set never share a
    generator seed even when called with the same ``seed``.  With ``seen``,
    questions already in it are skipped (and new ones added), so a set has no
    exact repeats; if a small level-1 cell runs out of distinct problems
    (pools far above ~2,000 prompts) repeats are allowed rather than failing.
    """
    from saerl_zoo.extras import require

    require("reproduce", "generating tasks")
    import reasoning_gym  # imported lazily: only needed to (re)build data

    spec = FAMILIES[family]
    ds = reasoning_gym.create_dataset(
        spec.rg_name,
        size=20 * count + 100,
        seed=_stable_seed(stream, seed, family, level),
        **spec.levels[level],
    )
    out: list[dict[str, Any]] = []
    repeats: list[dict[str, Any]] = []
    for idx in range(len(ds)):
        if len(out) == count:
            break
        entry = ds[idx]
        question = spec.question(entry)
        if len(question) > MAX_QUESTION_CHARS:
            continue
        problem = {"question": question, "answer": str(entry["answer"]).strip(), "family": family, "level": level}
        if seen is not None and question in seen:
            repeats.append(problem)
            continue
        if seen is not None:
            seen.add(question)
        out.append(problem)
    out += repeats[: count - len(out)]
    if len(out) < count:
        raise RuntimeError(f"could not generate {count} short problems for {family} level {level}")
    return out


def _stratified(n: int, seed: int, stream: str, seen: set[str] | None = None) -> list[dict[str, Any]]:
    """``n`` clean problems spread evenly over every (family, level) cell
    (cell sizes differ by at most one), in a seeded random order."""
    cells = [(f, lvl) for f in FAMILIES for lvl in LEVELS]
    problems: list[dict[str, Any]] = []
    for i, (family, level) in enumerate(cells):
        count = n // len(cells) + (1 if i < n % len(cells) else 0)
        if count:
            problems += _cell_problems(stream, seed, family, level, count, seen)
    random.Random(_stable_seed("order", stream, seed)).shuffle(problems)
    return problems


def _to_items(problems: list[dict[str, Any]], prefix: str) -> tuple[list[dict], list[dict]]:
    """Split problems into what the pipeline sees and the evaluation truth."""
    items, truth = [], []
    for i, p in enumerate(problems):
        pid = f"{prefix}{i:05d}"
        items.append({"id": pid, "prompt": format_prompt(p["question"]), "answer": p["answer"]})
        truth.append({"id": pid, "family": p["family"], "level": p["level"],
                      "quality": 0 if p.get("defect") else 1, "defect": p.get("defect")})
    return items, truth


def build_eval_set(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Held-out clean problems, stratified by family and level.

    Why: pass rates of a policy before/after RL must be measured on problems
    the curriculum never saw.  Generator seeds come from the "eval" stream, so
    they are disjoint from :func:`build_pool` and :func:`build_train_set`.
    Returns ``(items, truth)`` shaped like :func:`build_pool` (all quality 1).
    """
    return _to_items(_stratified(n, seed, "eval", seen=set()), "e")


def build_train_set(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Clean, stratified problems for pre-training the embedded policy LM.

    Why: the tiny policy must learn the task format (and the easy levels)
    from problems that are not the RL pool itself.  Uses the "train" stream.
    """
    return _to_items(_stratified(n, seed, "train"), "t")


# --------------------------------------------------------------------------
# Low-quality prompts

_WORDS = (
    "the a our your this every weather city market river team garden train coffee movie "
    "music window house price report meeting season player story morning evening company "
    "is was looks seems feels opens closes grows runs sings stays arrives "
    "quickly today tomorrow outside inside again very quite really "
    "blue green quiet busy new old cold warm bright late early"
).split()
_BOILERPLATE = (
    "Click here to subscribe to our {w}!",
    "Accept all {w} cookies to continue.",
    "Page {n} of {m} | Next >>",
    "Lorem ipsum dolor sit amet, {w} elit.",
    "Posted by admin in {w} at {n}:{m} pm.",
    "Share this {w} post on social media.",
    "<div class='footer'>{w} rights reserved</div>",
    "Error {n}{m}: {w} not found.",
    "Thanks for reading, see you next {w}!",
)


def _off_topic_text(rng: random.Random) -> str:
    """Scraped-web noise: boilerplate lines or word salad, no math problem."""
    if rng.random() < 0.3:
        return rng.choice(_BOILERPLATE).format(w=rng.choice(_WORDS), n=rng.randint(1, 12), m=rng.randint(10, 59))
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 9))]
    while len(" ".join(words)) >= MAX_QUESTION_CHARS:
        words.pop()
    return " ".join(words).capitalize() + rng.choice((".", "!", "?"))


def _wrong_answer(answer: str, rng: random.Random) -> str:
    """A plausible but wrong reference answer (off by a little, or a flipped
    fraction); positive answers stay positive so the error is not obvious."""
    if "/" in answer:
        num, den = (int(x) for x in answer.split("/"))
        options = [f"{num + 1}/{den}", f"{num}/{den + 1}"] + ([f"{den}/{num}"] if num != den and num else [])
        return rng.choice(options)
    value = int(answer)
    delta = rng.choice((-10, -2, -1, 1, 2, 3, 10))
    if value > 0 and value + delta <= 0:
        delta = abs(delta)
    return str(value + delta)


def _defect_counts(n_bad: int) -> dict[str, int]:
    """Split ``n_bad`` over the defect kinds by :data:`DEFECTS` (largest remainder)."""
    raw = {k: n_bad * w for k, w in DEFECTS.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n_bad - sum(counts.values())]:
        counts[k] += 1
    return counts


def _unique(make: Callable[[], str], seen: set[str], tries: int = 20) -> str:
    """Draw from ``make`` until the text is not in ``seen`` (best effort)."""
    text = make()
    for _ in range(tries):
        if text not in seen:
            break
        text = make()
    seen.add(text)
    return text


def _broken_problems(clean: list[dict], n_bad: int, seed: int, seen: set[str]) -> list[dict[str, Any]]:
    """Low-quality problems: corrupted fresh problems, near-copies of clean pool
    problems, and off-topic text."""
    rng = random.Random(_stable_seed("defects", seed))
    counts = _defect_counts(n_bad)
    fresh = _stratified(counts["wrong_answer"] + counts["truncated"], seed, "pool-broken", seen)
    out: list[dict[str, Any]] = []
    for p in fresh[: counts["wrong_answer"]]:
        out.append({**p, "answer": _wrong_answer(p["answer"], rng), "defect": "wrong_answer"})
    for p in fresh[counts["wrong_answer"]:]:
        question = _unique(lambda: truncate(p["question"], rng), seen)
        out.append({**p, "question": question, "defect": "truncated"})
    for p in rng.sample(clean, min(counts["near_duplicate"], len(clean))):
        question = _unique(lambda: near_duplicate(p["question"], rng), seen)
        out.append({**p, "question": question, "defect": "near_duplicate"})
    for _ in range(counts["off_topic"]):
        out.append({"question": _unique(lambda: _off_topic_text(rng), seen), "answer": str(rng.randint(0, 99)),
                    "family": OFF_TOPIC_FAMILY, "level": None, "defect": "off_topic"})
    return out


def build_pool(n: int, seed: int = 0, bad_fraction: float = 0.15) -> tuple[list[dict], list[dict]]:
    """The RL prompt pool: ``n`` prompts of which ``round(n * bad_fraction)`` are broken.

    Why: this is the stand-in for a scraped RL dataset that SaeRL has to order
    and filter.  Returns ``(items, truth)``:

    * ``items``: ``{"id", "prompt", "answer"}`` — all the pipeline may see;
    * ``truth``: ``{"id", "family", "level", "quality", "defect"}`` — for
      evaluation only.  ``quality`` is 1 for clean problems and 0 for broken
      ones; ``defect`` is ``None`` or one of :data:`DEFECTS`; off-topic items
      have family ``"off_topic"`` and level ``None``.

    Deterministic in ``seed``; ids are ``p00000``... in a shuffled order, so
    neither the id nor the position leaks the ground truth.
    """
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError("bad_fraction must be in [0, 1)")
    n_bad = round(n * bad_fraction)
    seen: set[str] = set()  # no exact repeats: near-duplicates are the injected defect
    clean = _stratified(n - n_bad, seed, "pool", seen)
    problems = clean + _broken_problems(clean, n_bad, seed, seen)
    random.Random(_stable_seed("pool-order", seed)).shuffle(problems)
    return _to_items(problems, "p")


# --------------------------------------------------------------------------
# Worked-solution families: hard problems are chains of the easy step
#
# Why: a policy that answers directly can only memorise answers under RL; one
# that writes the steps makes an occasional slip, which RL can sharpen, and a
# skill sharpened on short problems carries over to long ones.  Each family's
# level is its number of steps, and its reference solution is the exact text
# the policy is trained to write before its final answer ``#<answer>``.


@dataclass(frozen=True)
class WorkedProblem:
    """A question, its final answer, and the worked solution that ends in it."""

    question: str
    answer: str
    solution: str


def _running_sum(rng: random.Random, level: int) -> WorkedProblem:
    """Level L: L + 2 one-digit terms, one running partial sum per term."""
    terms = [rng.randint(1, 9) for _ in range(level + 2)]
    total = terms[0] + terms[1]
    steps = [f"{terms[0]}+{terms[1]}={total}"]
    for t in terms[2:]:
        total += t
        steps.append(f"+{t}={total}")
    return WorkedProblem("Sum " + "+".join(map(str, terms)), str(total), " ".join(steps) + f" #{total}")


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _long_add(rng: random.Random, level: int) -> WorkedProblem:
    """Level L: two (L + 1)-digit numbers added column by column from the right,
    the carry written as ``+1`` in the next column."""
    a, b = _operand(rng, level + 1), _operand(rng, level + 1)
    steps, carry = [], 0
    for x, y in zip(reversed(str(a)), reversed(str(b))):
        s = int(x) + int(y) + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={s}")
        carry = s // 10
    return WorkedProblem(f"Add {a}+{b}", str(a + b), " ".join(steps) + f" #{a + b}")


def _long_mul(rng: random.Random, level: int) -> WorkedProblem:
    """Level L: an (L + 1)-digit number times a digit 2..9, digit by digit from
    the right, the carry written as ``+c`` in the next product."""
    a, m = _operand(rng, level + 1), rng.randint(2, 9)
    steps, carry = [], 0
    for x in reversed(str(a)):
        s = int(x) * m + carry
        steps.append(f"{x}*{m}{f'+{carry}' if carry else ''}={s}")
        carry = s // 10
    return WorkedProblem(f"Mul {a}*{m}", str(a * m), " ".join(steps) + f" #{a * m}")


WORKED_FAMILIES: dict[str, Callable[[random.Random, int], WorkedProblem]] = {
    "running_sum": _running_sum,
    "long_add": _long_add,
    "long_mul": _long_mul,
}
WORKED_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
# Every question text falls in one split by a hash of the text itself, so the
# evaluation set, the RL pool and the policy's training set can never share a
# prompt, whatever their sizes and seeds (and edited pool prompts are checked
# against the same rule).  Level-1 cells hold ~720 problems, ~90 per split.
_SPLITS = 8
_SPLIT_OF = {"eval": (0,), "pool": (1,), "train": tuple(range(2, _SPLITS))}


def split_of(question: str) -> str:
    """Which split (``"eval"``, ``"pool"`` or ``"train"``) a question text belongs to."""
    bucket = _stable_seed("split", question) % _SPLITS
    return next(name for name, buckets in _SPLIT_OF.items() if bucket in buckets)


def worked_problems(split: str, family: str, level: int, count: int, seed: int,
                    seen: set[str] | None) -> list[WorkedProblem]:
    """``count`` problems of one (family, level) cell whose questions belong to
    ``split``.  With a ``seen`` set they are distinct: questions in it are
    skipped and new ones added; with None repeats are allowed (a training set
    larger than a small level-1 cell)."""
    rng = random.Random(_stable_seed("worked", split, seed, family, level))
    make = WORKED_FAMILIES[family]
    out: list[WorkedProblem] = []
    for _ in range(400 * count + 1000):
        if len(out) == count:
            return out
        p = make(rng, level)
        if split_of(p.question) == split and (seen is None or p.question not in seen):
            if seen is not None:
                seen.add(p.question)
            out.append(p)
    raise RuntimeError(f"{family} level {level} has fewer than {count} distinct {split} problems")


def _worked_stratified(split: str, counts: dict[int, int], seed: int, seen: set[str] | None) -> list[dict[str, Any]]:
    """Problems of every family, ``counts[level]`` per family at each level, shuffled."""
    problems = [{"question": p.question, "answer": p.answer, "solution": p.solution, "family": f, "level": lvl}
                for f in WORKED_FAMILIES for lvl, n in counts.items() if n
                for p in worked_problems(split, f, lvl, n, seed, seen)]
    random.Random(_stable_seed("worked-order", split, seed)).shuffle(problems)
    return problems


def _even(n: int, k: int) -> list[int]:
    """``n`` split into ``k`` parts that differ by at most one."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def build_worked_eval_set(n_per_cell: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Held-out worked-family problems, ``n_per_cell`` per (family, level), all
    from the ``"eval"`` split, so disjoint from any pool or training set."""
    return _to_items(_worked_stratified("eval", dict.fromkeys(WORKED_LEVELS, n_per_cell), seed, set()), "e")


def build_worked_train_set(n: int, seed: int = 0, level_weights: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """``n`` problems with their worked solutions for supervised training of the
    policy (``"train"`` split).  ``level_weights`` (one per level, default
    equal) sets how often each level appears: rarer long problems leave the
    policy graded, good at few steps and error-prone at many.  Small level-1
    cells repeat problems."""
    weights = np.asarray(level_weights if level_weights is not None else [1.0] * len(WORKED_LEVELS), dtype=float)
    if weights.shape != (len(WORKED_LEVELS),) or (weights < 0).any() or weights.sum() == 0:
        raise ValueError(f"level_weights needs {len(WORKED_LEVELS)} non-negative weights, not all zero")
    per_family = n // len(WORKED_FAMILIES)
    raw = per_family * weights / weights.sum()
    counts = np.floor(raw).astype(int)
    counts[np.argsort(counts - raw)[: per_family - counts.sum()]] += 1
    return _worked_stratified("train", dict(zip(WORKED_LEVELS, counts.tolist())), seed, None)


def _carry_slip(answer: str, rng: random.Random) -> str:
    """The answer with one carry dropped or added: off by 10**k for a k >= 1
    inside the number, staying positive (a wrong reference that reads right)."""
    value = int(answer)
    k = rng.randint(1, max(1, len(answer) - 1))
    sign = -1 if value - 10**k > 0 and rng.random() < 0.5 else 1
    return str(value + sign * 10**k)


def _edited(make: Callable[[], str], seen: set[str], tries: int = 30) -> str | None:
    """A new text from ``make`` outside the evaluation split, or None if ``tries``
    draws found none (edited pool prompts obey the split rule too, so no pool
    prompt can equal an evaluation prompt)."""
    for _ in range(tries):
        text = make()
        if text not in seen and split_of(text) != "eval":
            seen.add(text)
            return text
    return None


def _edit_some(problems: list[dict[str, Any]], count: int, edit: Callable[[str], str], defect: str,
               seen: set[str]) -> list[dict[str, Any]]:
    """The first ``count`` of ``problems`` whose question ``edit`` can turn into a
    new non-evaluation text, marked with ``defect``."""
    out: list[dict[str, Any]] = []
    for p in problems:
        if len(out) == count:
            break
        question = _edited(lambda: edit(p["question"]), seen)
        if question is not None:
            out.append({**p, "question": question, "defect": defect})
    if len(out) < count:
        raise RuntimeError(f"could only make {len(out)} of {count} {defect} prompts")
    return out


def build_worked_pool(n: int, seed: int = 0, bad_fraction: float = 0.25) -> tuple[list[dict], list[dict]]:
    """The RL pool of the worked families: clean problems spread evenly over
    (family, level) plus ``round(n * bad_fraction)`` broken prompts split over
    :data:`DEFECTS`: wrong reference answers (carry slips, invisible from the
    prompt), truncated statements, near-duplicates of clean pool prompts, and
    off-topic text.  Clean and slipped problems are in the ``"pool"`` split and
    no text is in the ``"eval"`` one.  Returns ``(items, truth)`` shaped like
    :func:`build_pool`."""
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError("bad_fraction must be in [0, 1)")
    n_bad = round(n * bad_fraction)
    counts = _defect_counts(n_bad)
    n_slip, n_cut = counts["wrong_answer"], counts["truncated"]
    n_cells = len(WORKED_FAMILIES) * len(WORKED_LEVELS)
    seen: set[str] = set()
    cells = [(f, lvl) for f in WORKED_FAMILIES for lvl in WORKED_LEVELS]
    # clean and slipped problems each spread evenly over the cells (clean first, then the slips)
    per_cell = [c + s for c, s in zip(_even(n - n_bad, n_cells), reversed(_even(n_slip, n_cells)))]
    drawn = {cell: worked_problems("pool", *cell, k, seed, seen) for cell, k in zip(cells, per_cell)}
    clean_count = dict(zip(cells, _even(n - n_bad, n_cells)))
    # truncations are cut from problems of the training split: their full forms never enter the pool
    whole = [{"question": p.question, "answer": p.answer, "family": f, "level": lvl}
             for (f, lvl), k in zip(cells, _even(2 * n_cut, n_cells))
             for p in worked_problems("train", f, lvl, k, seed + 7919, set())]
    rng = random.Random(_stable_seed("worked-defects", seed))
    rng.shuffle(whole)
    clean = [{"question": p.question, "answer": p.answer, "family": f, "level": lvl}
             for (f, lvl), ps in drawn.items() for p in ps[: clean_count[(f, lvl)]]]
    out = list(clean)
    out += [{"question": p.question, "answer": _carry_slip(p.answer, rng), "family": f, "level": lvl,
             "defect": "wrong_answer"} for (f, lvl), ps in drawn.items() for p in ps[clean_count[(f, lvl)]:]]
    out += _edit_some(whole, n_cut, lambda q: truncate(q, rng), "truncated", seen)
    out += _edit_some(rng.sample(clean, len(clean)), counts["near_duplicate"], lambda q: near_duplicate(q, rng),
                      "near_duplicate", seen)
    out += [{"question": _edited(lambda: _off_topic_text(rng), seen, tries=200), "answer": str(rng.randint(0, 99)),
             "family": OFF_TOPIC_FAMILY, "level": None, "defect": "off_topic"} for _ in range(counts["off_topic"])]
    random.Random(_stable_seed("worked-pool-order", seed)).shuffle(out)
    return _to_items(out, "p")


# --------------------------------------------------------------------------
# Scoring

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*[-+]?\d+)?")


def _parse(text: str) -> tuple[str, Any] | None:
    """First number in ``text`` as ("frac", (num, den)) or ("num", Fraction)."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    token = m.group(0).replace(",", "").replace(" ", "")
    if "/" in token:
        num, den = token.split("/")
        if "." in num:
            return None
        return "frac", (int(num), int(den))
    return "num", Fraction(token)


def final_answer(completion: str) -> str | None:
    """The part of ``completion`` that holds its final answer, or None if it has none.

    A worked solution (:data:`WORKED_FAMILIES`) writes its steps with ``=`` on
    one line and ends with ``#<answer>``: its answer is what follows the last
    ``#``, and a worked solution cut off before any ``#`` (an ``=`` on its first
    line) has no answer: its first number is a step, which must never be scored
    as the answer.  A direct answer is the whole completion (whatever a
    rambling policy writes on later lines, e.g. a new ``Q: 1 + 1 =``).
    """
    if "#" in completion:
        return completion.rsplit("#", 1)[1]
    if "=" in completion.split("\n", 1)[0]:
        return None
    return completion


def score(completion: str, answer: str) -> float:
    """1.0 if the final answer in ``completion`` matches the reference ``answer``.

    Why not plain string equality: a policy may write ``+07`` or ``7.0`` for
    ``7``, or add text after the answer; RL rewards should not punish that.
    Integers/decimals are compared by value; a fraction answer ("2/5") must be
    given as the same fraction (so an unsimplified "4/10" does not count for a
    simplification task).  The first number of the :func:`final_answer` counts:
    after the last ``#`` of a worked solution, else the first of a direct answer.
    """
    text = final_answer(completion)
    got, ref = (_parse(text) if text is not None else None), _parse(answer)
    if got is None or ref is None:
        return 0.0
    return 1.0 if got == ref else 0.0


# --------------------------------------------------------------------------
# Evaluation against the ground truth (never shown to the pipeline)


def _finite(x: float) -> float | None:
    """Rounded float, or None for NaN (strict JSON has no NaN; toy builds can
    produce constant predictions)."""
    return round(float(x), 4) if np.isfinite(x) else None


def evaluate_against_truth(pred_difficulty: np.ndarray, pred_quality: np.ndarray, truth: list[dict]) -> dict[str, Any]:
    """Evaluation only: how well the probes recover the pool's hidden structure."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    clean = [n for n, t in enumerate(truth) if t["quality"] == 1]
    by_defect = {}
    for defect in sorted({t["defect"] for t in truth if t["defect"]}):
        rows = [n for n, t in enumerate(truth) if t["defect"] in (None, defect)]
        by_defect[defect] = _finite(roc_auc_score([truth[n]["quality"] for n in rows], pred_quality[rows]))
    return {
        "difficulty_spearman_vs_level_clean": _finite(spearmanr(pred_difficulty[clean], [truth[n]["level"] for n in clean]).statistic),
        "mean_predicted_difficulty_by_level": {
            str(lvl): _finite(np.mean([pred_difficulty[n] for n in clean if truth[n]["level"] == lvl]))
            for lvl in sorted({truth[n]["level"] for n in clean})},  # the pool's own levels (3 or 7)
        "quality_auroc_vs_truth": _finite(roc_auc_score([t["quality"] for t in truth], pred_quality)),
        "quality_auroc_clean_vs_each_defect": by_defect,
    }
