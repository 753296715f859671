"""Write demo/rollouts.jsonl: the shipped buffer of sampled responses that `make demo` labels.

What a user has after sampling: for each of 24 arithmetic word problems, K = 8 worked
responses "sampled from a model" (here written from templates, with the slips models make:
a wrong operation, a forgotten step, an arithmetic error, a truncated answer with no final
answer), and the reference answer. No rewards: `rift-losses label` grades them.

Deterministic (seeded); run it to regenerate the shipped file:

    python demo/make_rollouts.py            # writes demo/rollouts.jsonl
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

K = 8  # responses per problem, as in the paper
#: Correct responses per problem: mostly mixed (as in the paper's Table 4), a few all right or all wrong.
N_CORRECT = (8, 0, 6, 5, 4, 3, 2, 7, 5, 6, 1, 4, 8, 3, 5, 6, 2, 4, 0, 7, 5, 3, 6, 4)


def _fmt(x) -> str:
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def _latex_frac(x: Fraction) -> str:
    return f"\\frac{{{x.numerator}}}{{{x.denominator}}}"


# Each problem: (prompt, answer, [correct worked solutions], [wrong worked solutions]).
# Final-answer phrasing varies like real samples: "The answer is X.", "\boxed{X}", "= X dollars".


def clips(rng):
    a = rng.choice([24, 36, 48, 60, 72, 84])
    b = a // 2
    prompt = f"Natalia sold clips to {a} of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
    right = [
        f"In May she sold {a} / 2 = {b} clips. Altogether she sold {a} + {b} = {a + b} clips. The answer is {a + b}.",
        f"April: {a} clips. May: half of {a} is {b}. Total: {a} + {b} = {a + b}.\nSo the final answer is \\boxed{{{a + b}}}.",
    ]
    wrong = [
        f"In May she sold {a} / 2 = {b} clips. The answer is {b}.",
        f"In May she sold {a} * 2 = {2 * a} clips. Altogether {a} + {2 * a} = {3 * a}. The answer is {3 * a}.",
        f"Half of {a} is {b}. Then {a} + {b} = {a + b + 10}. The answer is {a + b + 10}.",
    ]
    return prompt, _fmt(a + b), right, wrong


def babysitting(rng):
    rate = rng.choice([12, 15, 18, 24])
    minutes = rng.choice([20, 40, 50])
    pay = Fraction(rate * minutes, 60)
    prompt = f"Weng earns ${rate} an hour for babysitting. Yesterday, she just did {minutes} minutes of babysitting. How much did she earn?"
    right = [
        f"She earns {rate} / 60 = {_fmt(Fraction(rate, 60))} dollars per minute. For {minutes} minutes she earns {_fmt(Fraction(rate, 60))} * {minutes} = {_fmt(pay)} dollars. The answer is {_fmt(pay)}.",
        f"{minutes} minutes is {_fmt(Fraction(minutes, 60))} of an hour, so she earned {rate} * {_fmt(Fraction(minutes, 60))} = {_fmt(pay)}.\nThe final answer is \\boxed{{{_fmt(pay)}}}.",
    ]
    wrong = [
        f"She earns {rate} dollars an hour and worked {minutes} minutes, so she earned {rate} * {minutes} = {rate * minutes} dollars. The answer is {rate * minutes}.",
        f"{minutes} minutes is less than an hour, so she earned {rate} dollars. The answer is {rate}.",
        f"She earns {rate} / 60 = {_fmt(Fraction(rate, 60))} per minute. Let me multiply by the minutes she worked",
    ]
    return prompt, _fmt(pay), right, wrong


def bakery(rng):
    a, b = rng.choice([30, 42, 55]), rng.choice([18, 25, 27])
    c = rng.choice([20, 33, 40])
    left = a + b - c
    prompt = f"A baker makes {a} loaves of bread in the morning and {b} loaves in the afternoon. He sells {c} loaves. How many loaves are left?"
    right = [
        f"He makes {a} + {b} = {a + b} loaves. After selling {c}, {a + b} - {c} = {left} are left. The answer is {left}.",
        f"Total baked: {a + b}. Left: {a + b} - {c} = {left}.\n\\boxed{{{left}}}",
    ]
    wrong = [
        f"He makes {a} + {b} = {a + b} loaves. The answer is {a + b}.",
        f"{a} - {c} = {a - c}, and {a - c} + {b} = {a - c + b - 1}. The answer is {a - c + b - 1}.",
        f"He sold {c} of the {a} morning loaves, so {a} - {c} = {a - c} are left. The answer is {a - c}.",
    ]
    return prompt, _fmt(left), right, wrong


def marbles(rng):
    c = rng.choice([3, 4, 5])
    b = rng.choice([4, 6, 7])
    a = b * c + rng.choice([5, 9, 12])
    left = a - b * c
    prompt = (
        f"Tom has {a} marbles. He gives {b} marbles to each of his {c} friends. How many marbles does Tom have left?"
    )
    right = [
        f"He gives away {b} * {c} = {b * c} marbles. He has {a} - {b * c} = {left} left. The answer is {left}.",
        f"Each friend gets {b}, and there are {c} friends: {b} x {c} = {b * c}. Then {a} - {b * c} = {left}.\nThe final answer is \\boxed{{{left}}}.",
    ]
    wrong = [
        f"He gives away {b} marbles, so he has {a} - {b} = {a - b} left. The answer is {a - b}.",
        f"He gives away {b} + {c} = {b + c} marbles, so {a} - {b + c} = {a - b - c} are left. The answer is {a - b - c}.",
        "He gives marbles to each friend, so we need to find how many he gave away in total. First, count the friends",
    ]
    return prompt, _fmt(left), right, wrong


def pizza(rng):
    n = rng.choice([6, 8, 12])
    k = rng.choice([2, 3, 4])
    frac = Fraction(k, n)
    prompt = f"A pizza is cut into {n} equal slices and Sam eats {k} of them. What fraction of the pizza does Sam eat? Give the answer as a fraction in lowest terms."
    right = [
        f"Sam eats {k} of {n} slices, which is {k}/{n} = {frac.numerator}/{frac.denominator} of the pizza. The answer is $\\frac{{{frac.numerator}}}{{{frac.denominator}}}$.",
        f"The fraction is $\\frac{{{k}}}{{{n}}}$, which simplifies to $\\boxed{{{_latex_frac(frac)}}}$.",
    ]
    wrong_frac = Fraction(k, n - k)
    wrong = [
        f"Sam eats {k} slices and {n - k} are left, so the fraction is $\\frac{{{k}}}{{{n - k}}}$ = $\\boxed{{{_latex_frac(wrong_frac)}}}$.",
        f"There are {n} slices, so each slice is $\\frac{{1}}{{{n}}}$. The answer is $\\frac{{1}}{{{n}}}$.",
        f"The pizza has {n} slices and Sam eats {k}, so he eats {n} / {k} = {_fmt(Fraction(n, k))} of it. The answer is {_fmt(Fraction(n, k))}.",
    ]
    return prompt, _latex_frac(frac), right, wrong


def train(rng):
    v, t = rng.choice([60, 75, 80]), rng.choice([Fraction(3, 2), Fraction(5, 2), 3])
    d = v * t
    prompt = f"A train travels at {v} km per hour for {_fmt(t)} hours. How far does it travel, in km?"
    right = [
        f"Distance = speed * time = {v} * {_fmt(t)} = {_fmt(d)} km. The answer is {_fmt(d)}.",
        f"In one hour it goes {v} km, so in {_fmt(t)} hours it goes {v} x {_fmt(t)} = {_fmt(d)} km.\n\\boxed{{{_fmt(d)}}}",
    ]
    wrong = [
        f"Distance = speed / time = {v} / {_fmt(t)} = {_fmt(Fraction(v) / Fraction(t))} km. The answer is {_fmt(Fraction(v) / Fraction(t))}.",
        f"Distance = {v} + {_fmt(t)} = {_fmt(v + Fraction(t))} km. The answer is {_fmt(v + Fraction(t))}.",
        f"Distance = {v} * {_fmt(t)} = {_fmt(d + 5)} km. The answer is {_fmt(d + 5)}.",
    ]
    return prompt, _fmt(d), right, wrong


TEMPLATES = (clips, babysitting, bakery, marbles, pizza, train)
OPENINGS = (
    "",
    "",
    "Let's solve this step by step.\n",
    "Let me think.\n",
    "Step by step:\n",
    "We need to work this out carefully.\n",
)


def rollouts(seed: int = 0, problems: int = 24) -> list[dict]:
    """``problems`` problems x K responses; each problem's share of correct responses varies."""
    rng = random.Random(seed)
    rows = []
    seen = set()
    for i in range(problems):
        prompt, answer, right, wrong = TEMPLATES[i % len(TEMPLATES)](rng)
        while prompt in seen:  # every problem distinct
            prompt, answer, right, wrong = TEMPLATES[i % len(TEMPLATES)](rng)
        seen.add(prompt)
        samples = [rng.choice(OPENINGS) + rng.choice(right) for _ in range(N_CORRECT[i % len(N_CORRECT)])]
        samples += [rng.choice(OPENINGS) + rng.choice(wrong) for _ in range(K - len(samples))]
        rng.shuffle(samples)
        rows += [{"prompt": prompt, "response": s, "answer": answer} for s in samples]
    return rows


def main() -> None:
    out = Path(__file__).with_name("rollouts.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for row in rollouts():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
