"""Prompted data: coverage of every class in both splits, disjoint train / held-out wordings, every class set
checked against an independent reading of its text (digits: arithmetic; gmm-grid25: the dataset's mode
means), prompt_for over labels and seeds, one-line errors."""
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dpmot_bench.data import get_dataset
from dpmot_bench.data.prompts import KINDS, PROMPT_SPLITS, Prompt, PromptSet, get_prompt_set, prompt_sets
from dpmot_bench.errors import InputError

NAMES = ["digits", "gmm-grid25"]
WORDS = "zero one two three four five six seven eight nine".split()
NUM = {w: i for i, w in enumerate(WORDS)}
W = "(" + "|".join(WORDS) + ")"
PRIMES = {2, 3, 5, 7}


def test_names():
    assert prompt_sets() == NAMES
    assert all(get_prompt_set(n).n_classes == get_dataset(n).n_classes for n in NAMES)
    assert get_prompt_set("digits") is get_prompt_set("digits")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", PROMPT_SPLITS)
def test_every_class_has_prompts_of_each_kind_in_each_split(name, kind, split):
    ps = get_prompt_set(name)
    prompts = ps.prompts(kind, split)
    assert all(p.kind == kind and p.split == split for p in prompts)
    for c in range(ps.n_classes):
        assert ps.candidates(c, kind, split), (name, kind, split, c)
    if kind == "simple":  # one class each, every class named by every simple template of the split
        assert all(len(p.classes) == 1 for p in prompts)
        for template in {p.template for p in prompts}:
            assert sorted(next(iter(p.classes)) for p in prompts if p.template == template) == list(range(ps.n_classes))


@pytest.mark.parametrize("name", NAMES)
def test_train_and_heldout_wordings_are_disjoint(name):
    ps = get_prompt_set(name)
    for kind in KINDS:
        train, held = ps.prompts(kind, "train"), ps.prompts(kind, "heldout")
        assert not {p.text for p in train} & {p.text for p in held}
        assert not {p.template for p in train} & {p.template for p in held}
        assert len(held) >= 10 and len(train) >= 10
    texts = [p.text for p in ps.all_prompts]
    assert len(texts) == len(set(texts))


@pytest.mark.parametrize("name", NAMES)
def test_class_sets_are_non_empty_proper_subsets(name):
    ps = get_prompt_set(name)
    for p in ps.all_prompts:
        assert isinstance(p.classes, frozenset) and p.classes and len(p.classes) < ps.n_classes
        assert all(isinstance(c, int) and 0 <= c < ps.n_classes for c in p.classes)
        assert ps.classes_of(p.text) == p.classes and ps.prompt(p.text) is p and p.text in ps
    # complex prompts include real sets, not only single classes
    assert any(len(p.classes) > 1 for p in ps.prompts("complex", "train"))
    assert any(len(p.classes) > 1 for p in ps.prompts("complex", "heldout"))


# ---- digits: an independent reading of every wording --------------------------------------------------
def digit_oracle(text: str) -> set[int]:
    D = range(10)
    rules = [
        (rf"a handwritten {W}|a picture of the number {W}|an? image of an? {W}|an? {W}, drawn with a pen",
         lambda *g: {NUM[next(x for x in g if x)]}),
        (r"the digit (\d)|the numeral (\d) written by hand", lambda *g: {int(next(x for x in g if x))}),
        (rf"the digit after {W}|the number that comes right after {W}", lambda *g: {NUM[next(x for x in g if x)] + 1}),
        (rf"the digit before {W}|one less than {W}", lambda *g: {NUM[next(x for x in g if x)] - 1}),
        (rf"an (odd|even) (?:number|digit) (greater than|below|smaller than) {W}",
         lambda par, rel, k: {n for n in D if (n % 2 == 1) == (par == "odd")
                              and (n > NUM[k] if rel == "greater than" else n < NUM[k])}),
        (rf"a digit between {W} and {W}|a digit greater than {W} but less than {W}",
         lambda *g: (lambda a, b: set(range(NUM[a] + 1, NUM[b])))(*[x for x in g if x])),
        (rf"{W} plus {W}|the sum of {W} and {W}", lambda *g: {sum(NUM[x] for x in g if x)}),
        (rf"twice {W}", lambda k: {2 * NUM[k]}),
        (rf"half of {W}", lambda k: {NUM[k] // 2}),
        (rf"a prime number less than {W}", lambda k: {n for n in PRIMES if n < NUM[k]}),
        (r"a prime digit", lambda: PRIMES),
        (r"an odd digit", lambda: {1, 3, 5, 7, 9}),
        (r"an even digit", lambda: {0, 2, 4, 6, 8}),
        (r"the largest digit", lambda: {9}),
        (r"the smallest digit", lambda: {0}),
        (r"a positive multiple of three", lambda: {3, 6, 9}),
        (r"a number that is not prime", lambda: {0, 1, 4, 6, 8, 9}),
    ]
    hits = [(rule, m) for rule, _ in rules if (m := re.fullmatch(rule, text))]
    assert len(hits) == 1, (text, [h[0] for h in hits])
    fn = dict(rules)[hits[0][0]]
    return fn(*hits[0][1].groups())


def test_digit_class_sets_match_an_independent_reading():
    ps = get_prompt_set("digits")
    for p in ps.all_prompts:
        assert p.classes == frozenset(digit_oracle(p.text)), p
    assert ps.classes_of("the digit after six") == {7}
    assert ps.classes_of("an odd number greater than seven") == {9}
    assert ps.classes_of("an even digit below four") == {0, 2}
    assert ps.classes_of("a handwritten seven") == {7} and ps.classes_of("the digit 7") == {7}
    assert ps.class_names[7] == "seven"


# ---- gmm-grid25: every wording read against the dataset's mode means ---------------------------------
def grid_points():
    means = get_dataset("gmm-grid25").mixture.means
    return [(float(x), float(y)) for x, y in means.tolist()]


def test_grid_mode_order():
    """Mode k = 5 i + j has mean (ticks[i], ticks[j]): x varies slowest (torch.cartesian_prod)."""
    ticks = [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert grid_points() == [(ticks[k // 5], ticks[k % 5]) for k in range(25)]
    assert get_prompt_set("gmm-grid25").class_names[5 * 1 + 4] == "(-2, 4)"


def grid_oracle(text: str) -> set[int]:
    pts = grid_points()
    coord = {"minus four": -4, "minus two": -2, "zero": 0, "two": 2, "four": 4}
    row_y = {"top": 4, "middle": 0, "bottom": -4}
    col_x = {"left": -4, "middle": 0, "right": 4}

    def where(pred):
        return {k for k, (x, y) in enumerate(pts) if pred(x, y)}

    def half(name):
        return {"left": lambda x, y: x < 0, "right": lambda x, y: x > 0, "upper": lambda x, y: y > 0,
                "top": lambda x, y: y > 0, "lower": lambda x, y: y < 0, "bottom": lambda x, y: y < 0}[name]

    step = {"left of": (-2, 0), "right of": (2, 0), "above": (0, 2), "below": (0, -2)}
    rules = [
        (r"the point at x = (-?\d), y = (-?\d)|the mode at \((-?\d), (-?\d)\)|"
         r"the point with x-coordinate (-?\d) and y-coordinate (-?\d)",
         lambda *g: (lambda a, b: where(lambda x, y: (x, y) == (int(a), int(b))))(*[v for v in g if v])),
        (r"the point at x equals ([a-z ]+), y equals ([a-z ]+)",
         lambda a, b: where(lambda x, y: (x, y) == (coord[a], coord[b]))),
        (r"any point on the (top|middle|bottom) row", lambda r: where(lambda x, y: y == row_y[r])),
        (r"any point in the (left|middle|right) column", lambda c: where(lambda x, y: x == col_x[c])),
        (r"a point in the (top|bottom)-(left|right) corner",
         lambda v, h: where(lambda x, y: x == col_x[h] and y == row_y[v])),
        (r"a point in the (top|bottom)-(left|right) quadrant|a mode in the (upper|lower)-(left|right) quadrant",
         lambda *g: (lambda v, h: where(lambda x, y: half(v)(x, y) and half(h)(x, y)))(*[v for v in g if v])),
        (r"the point (left of|right of|above|below) the centre|"
         r"the mode just (?:to the )?(left of|right of|above|below) the origin",
         lambda *g: where(lambda x, y: (x, y) == step[next(v for v in g if v)])),
        (r"the centre of the grid", lambda: where(lambda x, y: x == 0 and y == 0)),
        (r"a point on the line y = x|a point on the diagonal from the bottom-left to the top-right corner",
         lambda: where(lambda x, y: x == y)),
        (r"a point on the diagonal from the top-left to the bottom-right corner", lambda: where(lambda x, y: x == -y)),
        (r"a point on the edge of the grid", lambda: where(lambda x, y: abs(x) == 4 or abs(y) == 4)),
        (r"a point in the interior of the grid, away from its edge", lambda: where(lambda x, y: abs(x) < 4 and abs(y) < 4)),
        (r"a point in the (left|right|top|bottom) half", lambda h: where(half(h))),
        (r"a point on the (top|bottom) row in the (left|right) half",
         lambda r, h: where(lambda x, y: y == row_y[r] and half(h)(x, y))),
        (r"a point on the (horizontal|vertical) line through the centre",
         lambda d: where(lambda x, y: (y if d == "horizontal" else x) == 0)),
        (r"the point farthest to the (left|right) in the (top|bottom) row",
         lambda h, r: where(lambda x, y: x == col_x[h] and y == row_y[r])),
        (r"a point at distance two from the centre", lambda: where(lambda x, y: abs(np.hypot(x, y) - 2) < 1e-9)),
        (r"a point whose coordinates are both negative", lambda: where(lambda x, y: x < 0 and y < 0)),
    ]
    hits = [(rule, m) for rule, _ in rules if (m := re.fullmatch(rule, text))]
    assert len(hits) == 1, (text, [h[0] for h in hits])
    return dict(rules)[hits[0][0]](*hits[0][1].groups())


def test_grid_class_sets_match_the_mode_means():
    ps = get_prompt_set("gmm-grid25")
    pts = grid_points()
    for p in ps.all_prompts:
        assert p.classes == frozenset(grid_oracle(p.text)), p
    for text in ["a point in the top-left corner", "a point in the top-left quadrant", "a mode in the upper-left quadrant"]:
        assert all(pts[k][0] < 0 and pts[k][1] > 0 for k in ps.classes_of(text))
    assert [pts[k] for k in ps.classes_of("a point in the top-left corner")] == [(-4.0, 4.0)]
    assert sorted(pts[k] for k in ps.classes_of("any point on the middle row")) == [(t, 0.0) for t in (-4, -2, 0, 2, 4)]
    assert [pts[k] for k in ps.classes_of("the point left of the centre")] == [(-2.0, 0.0)]
    assert [pts[k] for k in ps.classes_of("the point at x = 2, y = -4")] == [(2.0, -4.0)]
    # the mixture's own mode labels agree: samples of the modes a prompt names lie at those means
    x, labels = get_dataset("gmm-grid25").data("heldout", 500)
    for k in ps.classes_of("a point in the bottom half"):
        assert bool((x[labels == k][:, 1] < 0).all())


# ---- prompt_for ----------------------------------------------------------------------------------------
@given(name=st.sampled_from(NAMES), label=st.integers(0, 24), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(KINDS + ("any",)), split=st.sampled_from(PROMPT_SPLITS + ("any",)))
def test_prompt_for_contains_the_label(name, label, seed, kind, split):
    ps = get_prompt_set(name)
    label %= ps.n_classes
    p = ps.prompt_for(label, seed, kind, split)
    assert isinstance(p, Prompt) and label in p.classes and label in p
    assert kind in ("any", p.kind) and split in ("any", p.split)
    assert ps.prompt_for(label, np.random.default_rng(seed), kind, split) == p  # a seed is a fresh generator
    assert ps.prompt_for(np.int64(label), seed, kind, split) == p


@given(name=st.sampled_from(NAMES), seed=st.integers(0, 2**32 - 1),
       labels=st.lists(st.integers(0, 24), min_size=1, max_size=30))
def test_prompts_for_a_batch(name, seed, labels):
    ps = get_prompt_set(name)
    labels = [c % ps.n_classes for c in labels]
    out = ps.prompts_for(labels, seed, "complex", "train")
    assert len(out) == len(labels) and all(c in p.classes for c, p in zip(labels, out))
    assert ps.prompts_for(torch.tensor(labels), seed, "complex", "train") == out


def test_prompt_for_draws_templates_evenly():
    """Stage one picks a template uniformly: each of the k templates with a prompt for the label gets a
    share 1/k, checked with a 5-sigma binomial tolerance (and every such prompt is drawn at some point)."""
    ps = get_prompt_set("digits")
    rng = np.random.default_rng(0)
    n, label = 4000, 7
    draws = [ps.prompt_for(label, rng, "complex", "train") for _ in range(n)]
    templates = {p.template for p in ps.candidates(label, "complex", "train")}
    k = len(templates)
    assert k >= 5
    for t in templates:
        share = sum(p.template == t for p in draws)
        assert abs(share - n / k) < 5 * np.sqrt(n * (1 / k) * (1 - 1 / k)), (t, share, n / k)
    assert {p.text for p in draws} == {p.text for p in ps.candidates(label, "complex", "train")}


# ---- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: get_prompt_set("mnist"), "unknown prompted dataset 'mnist'"),
    (lambda: PromptSet("gmm-ring8"), "unknown prompted dataset"),
    (lambda: get_prompt_set("digits").classes_of("the digit after sixx"), "did you mean 'the digit after six'"),
    (lambda: get_prompt_set("digits").classes_of("a purple elephant"), "not a known digits prompt"),
    (lambda: get_prompt_set("digits").classes_of(7), "must be a str"),
    (lambda: get_prompt_set("digits").prompts("hard", "train"), "unknown prompt kind 'hard'"),
    (lambda: get_prompt_set("digits").prompts("simple", "test"), "unknown prompt split 'test'"),
    (lambda: get_prompt_set("digits").prompt_for(10, 0), "unknown class 10"),
    (lambda: get_prompt_set("digits").prompt_for(-1, 0), "unknown class -1"),
    (lambda: get_prompt_set("digits").prompt_for(True, 0), "unknown class True"),
    (lambda: get_prompt_set("digits").prompt_for(3, "seed"), "rng must be"),
    (lambda: get_prompt_set("digits").prompt_for(3, -1), "rng must be"),
])
def test_errors_are_one_line(call, match):
    with pytest.raises(InputError, match=re.escape(match)) as err:
        call()
    assert "\n" not in str(err.value)
