"""The baseline the solver must beat: an evolutionary search like the 256KB paper's.

Same search space, same additive memory model (fixed cost of the depth + Σ option costs), a budget
of evaluated samples. Kept only to show, in a benchmark and a test, how far it falls short.
"""

from __future__ import annotations

import random

from .space import SearchSpace


def evolve(space: SearchSpace, budget_bytes: int, samples: int = 5000, seed: int = 0, population: int = 50) -> float:
    """Best importance found with ``samples`` evaluations (0 if none fits)."""
    return evolve_plan(space, budget_bytes, samples, seed, population)[0]


def evolve_plan(space: SearchSpace, budget_bytes: int, samples: int = 5000, seed: int = 0,
                population: int = 50) -> tuple[float, int | None, tuple[int, ...]]:
    """Best importance found with ``samples`` evaluations, its depth and candidate index per
    choice from there (0, None, () if none fits): what a benchmark checks with the full memory model."""
    rng = random.Random(seed)
    fixed = space.fixed_bytes
    depths = [d for d in space.depths if fixed[d] <= budget_bytes]
    if not depths:
        return 0.0, None, ()

    def score(genome: tuple[int, list[int]]) -> float:
        depth, picks = genome
        cost = fixed[depth] + sum(space.choices[depth + i].candidates[k].cost_bytes for i, k in enumerate(picks))
        if cost > budget_bytes:
            return -1.0
        return sum(space.choices[depth + i].candidates[k].importance for i, k in enumerate(picks))

    def random_genome() -> tuple[int, list[int]]:
        depth = rng.choice(depths)
        return depth, [rng.randrange(len(c.candidates)) if rng.random() < 0.3 else 0 for c in space.choices[depth:]]

    def mutate(genome: tuple[int, list[int]]) -> tuple[int, list[int]]:
        depth, picks = genome
        if rng.random() < 0.1:
            new_depth = rng.choice(depths)
            picks = ([0] * (depth - new_depth) + picks) if new_depth < depth else picks[new_depth - depth :]
            depth = new_depth
        picks = list(picks)
        for _ in range(max(1, len(picks) // 10)):
            i = rng.randrange(len(picks))
            picks[i] = rng.randrange(len(space.choices[depth + i].candidates))
        return depth, picks

    scored = [(score(g), g) for g in (random_genome() for _ in range(population))]
    evaluated = population
    while evaluated < samples:
        scored.sort(key=lambda t: -t[0])
        parents = scored[: population // 4]
        children = [mutate(rng.choice(parents)[1]) for _ in range(population)]
        scored = parents + [(score(c), c) for c in children]
        evaluated += len(children)
    value, (depth, picks) = max(scored, key=lambda t: t[0])
    return (value, depth, tuple(picks)) if value > 0 else (0.0, None, ())
