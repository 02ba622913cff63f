"""Prompted data: the classes of ``digits`` and ``gmm-grid25`` paired with English text prompts.

Every prompt denotes an exact, non-empty set of the dataset's classes (its *class set*), computed from the
meaning of the template that wrote it: a template is a wording with arguments plus a predicate over a
class's attributes (the digit's value; a grid mode's coordinates), and a prompt's class set is
``{c : predicate(attributes(c), arguments)}``. No answer is typed in by hand.

Two kinds (after UPainting's simple and complex scenes):

* ``simple``: names one class in plain words ("a handwritten seven", "the digit 7"; "the point at x = 2,
  y = -4"). Every class has simple prompts in both splits.
* ``complex``: compositional or paraphrased wording, possibly denoting a set of classes ("the digit after
  six" -> {7}, "an even digit below four" -> {0, 2}; "any point on the middle row" -> the 5 modes with
  y = 0). Every class is in the class set of some complex prompt of each split.

Two splits of *wordings*: ``train`` (for training a text-conditional model and a matcher) and
``heldout`` (templates never used in training, for evaluation). Splits are disjoint by template and by
text: no prompt text is in both. A template whose class set would be empty or every class is skipped for
those arguments (it says nothing).

``gmm-grid25``: mode ``k`` has mean ``(x, y) = (ticks[k // 5], ticks[k % 5])`` with ticks
``(-4, -2, 0, 2, 4)`` (``torch.cartesian_prod(ticks, ticks)`` in :mod:`.registry`); the attributes are read
from the dataset's mixture means themselves. Directions: "left" is smaller x, "top" / "above" larger y; a
"row" has one y, a "column" one x; the "corner" is the one extreme mode, a "quadrant" / "half" is strict
(x < 0 and y > 0 for the top-left quadrant).

Use :func:`get_prompt_set` (cached), then :meth:`PromptSet.prompts`, :meth:`PromptSet.prompt_for` (a random
prompt whose class set contains a label, for training) and :meth:`PromptSet.classes_of` (the class set of a
known text).
"""
from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError, unknown_name

KINDS = ("simple", "complex")
PROMPT_SPLITS = ("train", "heldout")
_ANY = "any"

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Prompt:
    """One prompt: its ``text``, the exact set of classes it denotes, its kind and split, and the wording
    pattern (``template``) it was written from."""
    text: str
    classes: frozenset[int]
    kind: str
    split: str
    template: str

    def __contains__(self, label: int) -> bool:
        return int(label) in self.classes


@dataclass(frozen=True)
class Template:
    """A wording with named arguments and its meaning.

    ``wording`` is a ``str.format`` pattern over the fields that ``fields(args)`` makes of one argument
    binding; ``meaning(attrs, **args)`` says whether a class with attributes ``attrs`` is denoted;
    ``bindings`` lists the argument bindings (one prompt each; ``({},)`` for a fixed wording)."""
    wording: str
    kind: str
    split: str
    meaning: Callable[..., bool]
    bindings: tuple[dict, ...] = ({},)


# -------------------------------------------------------------------------------------------------------
# digits: the attribute of class n is the integer n
def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _digit_fields(args: dict) -> dict:
    out = {}
    for name, value in args.items():
        out[name] = str(value)
        out[f"{name}_w"] = WORDS[value]
        out[f"{name}_a"] = _article(WORDS[value])
    return out


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, n))


def _ks(values: Iterable[int]) -> tuple[dict, ...]:
    return tuple({"k": k} for k in values)


def _pairs(condition: Callable[[int, int], bool]) -> tuple[dict, ...]:
    return tuple({"a": a, "b": b} for a in range(10) for b in range(10) if condition(a, b))


D = range(10)
_DIGIT_TEMPLATES = (
    # simple: one class, plain words
    Template("a handwritten {k_w}", "simple", "train", lambda n, k: n == k, _ks(D)),
    Template("the digit {k}", "simple", "train", lambda n, k: n == k, _ks(D)),
    Template("a picture of the number {k_w}", "simple", "train", lambda n, k: n == k, _ks(D)),
    Template("an image of {k_a}", "simple", "heldout", lambda n, k: n == k, _ks(D)),
    Template("the numeral {k} written by hand", "simple", "heldout", lambda n, k: n == k, _ks(D)),
    Template("{k_a}, drawn with a pen", "simple", "heldout", lambda n, k: n == k, _ks(D)),
    # complex, train
    Template("the digit after {k_w}", "complex", "train", lambda n, k: n == k + 1, _ks(D)),
    Template("the digit before {k_w}", "complex", "train", lambda n, k: n == k - 1, _ks(D)),
    Template("an odd number greater than {k_w}", "complex", "train", lambda n, k: n % 2 == 1 and n > k, _ks(D)),
    Template("an even digit below {k_w}", "complex", "train", lambda n, k: n % 2 == 0 and n < k, _ks(D)),
    Template("a digit between {a_w} and {b_w}", "complex", "train", lambda n, a, b: a < n < b,
             _pairs(lambda a, b: b - a in (2, 3))),
    Template("{a_w} plus {b_w}", "complex", "train", lambda n, a, b: n == a + b,
             _pairs(lambda a, b: 1 <= a <= b and a + b <= 9)),
    Template("twice {k_w}", "complex", "train", lambda n, k: n == 2 * k, _ks(range(1, 5))),
    Template("a prime digit", "complex", "train", lambda n: _is_prime(n)),
    Template("an odd digit", "complex", "train", lambda n: n % 2 == 1),
    Template("an even digit", "complex", "train", lambda n: n % 2 == 0),
    Template("the largest digit", "complex", "train", lambda n: n == 9),
    Template("the smallest digit", "complex", "train", lambda n: n == 0),
    # complex, held out: paraphrases of the training meanings and new compositions of their parts
    Template("the number that comes right after {k_w}", "complex", "heldout", lambda n, k: n == k + 1, _ks(D)),
    Template("one less than {k_w}", "complex", "heldout", lambda n, k: n == k - 1, _ks(D)),
    Template("an even number greater than {k_w}", "complex", "heldout", lambda n, k: n % 2 == 0 and n > k,
             _ks(D)),
    Template("an odd digit smaller than {k_w}", "complex", "heldout", lambda n, k: n % 2 == 1 and n < k, _ks(D)),
    Template("a digit greater than {a_w} but less than {b_w}", "complex", "heldout",
             lambda n, a, b: a < n < b, _pairs(lambda a, b: b - a in (2, 4))),
    Template("the sum of {a_w} and {b_w}", "complex", "heldout", lambda n, a, b: n == a + b,
             _pairs(lambda a, b: 0 <= a <= b and a + b <= 9 and b >= 1)),
    Template("half of {k_w}", "complex", "heldout", lambda n, k: 2 * n == k, _ks(range(2, 10, 2))),
    Template("a prime number less than {k_w}", "complex", "heldout", lambda n, k: _is_prime(n) and n < k, _ks(D)),
    Template("a positive multiple of three", "complex", "heldout", lambda n: n > 0 and n % 3 == 0),
    Template("a number that is not prime", "complex", "heldout", lambda n: not _is_prime(n)),
)


# -------------------------------------------------------------------------------------------------------
# gmm-grid25: the attributes of a mode are its mean's coordinates (x, y), integers in {-4, -2, 0, 2, 4}
_COORD_WORDS = {-4: "minus four", -2: "minus two", 0: "zero", 2: "two", 4: "four"}
_ROWS = {"top": 4, "middle": 0, "bottom": -4}            # y of a named row
_COLUMNS = {"left": -4, "middle": 0, "right": 4}          # x of a named column
_HALVES = {"left": lambda x, y: x < 0, "right": lambda x, y: x > 0,
           "top": lambda x, y: y > 0, "bottom": lambda x, y: y < 0}
_CORNERS = {(v, h): (4 * (1 if h == "right" else -1), 4 * (1 if v == "top" else -1))
            for v in ("top", "bottom") for h in ("left", "right")}  # (x, y) of the extreme mode
_NEIGHBOURS = {"left of": (-2, 0), "right of": (2, 0), "above": (0, 2), "below": (0, -2)}
_NEIGHBOURS_HELDOUT = {"just to the left of": (-2, 0), "just to the right of": (2, 0),
                       "just above": (0, 2), "just below": (0, -2)}


def _grid_fields(args: dict) -> dict:
    out = {}
    for name, value in args.items():
        out[name] = str(value)
        if isinstance(value, int):
            out[f"{name}_w"] = _COORD_WORDS[value]
    return out


def _points() -> tuple[dict, ...]:
    return tuple({"x": x, "y": y} for x in _COORD_WORDS for y in _COORD_WORDS)


def _named(**options) -> tuple[dict, ...]:
    keys = list(options)
    return tuple(dict(zip(keys, values)) for values in itertools.product(*(options[k] for k in keys)))


_NEAR = ("left of", "right of", "above", "below")
_GRID_TEMPLATES = (
    # simple: one mode, by its coordinates
    Template("the point at x = {x}, y = {y}", "simple", "train", lambda p, x, y: p == (x, y), _points()),
    Template("the mode at ({x}, {y})", "simple", "train", lambda p, x, y: p == (x, y), _points()),
    Template("the point with x-coordinate {x} and y-coordinate {y}", "simple", "heldout",
             lambda p, x, y: p == (x, y), _points()),
    Template("the point at x equals {x_w}, y equals {y_w}", "simple", "heldout",
             lambda p, x, y: p == (x, y), _points()),
    # complex, train
    Template("any point on the {row} row", "complex", "train", lambda p, row: p[1] == _ROWS[row],
             _named(row=tuple(_ROWS))),
    Template("any point in the {col} column", "complex", "train", lambda p, col: p[0] == _COLUMNS[col],
             _named(col=tuple(_COLUMNS))),
    Template("a point in the {v}-{h} corner", "complex", "train", lambda p, v, h: p == _CORNERS[v, h],
             _named(v=("top", "bottom"), h=("left", "right"))),
    Template("a point in the {v}-{h} quadrant", "complex", "train",
             lambda p, v, h: _HALVES[v](*p) and _HALVES[h](*p), _named(v=("top", "bottom"), h=("left", "right"))),
    Template("the point {near} the centre", "complex", "train",
             lambda p, near: p == _NEIGHBOURS[near], _named(near=tuple(_NEIGHBOURS))),
    Template("the centre of the grid", "complex", "train", lambda p: p == (0, 0)),
    Template("a point on the line y = x", "complex", "train", lambda p: p[0] == p[1]),
    Template("a point on the edge of the grid", "complex", "train", lambda p: max(abs(p[0]), abs(p[1])) == 4),
    Template("a point in the {half} half", "complex", "train", lambda p, half: _HALVES[half](*p),
             _named(half=tuple(_HALVES))),
    Template("a point on the {row} row in the {half} half", "complex", "train",
             lambda p, row, half: p[1] == _ROWS[row] and _HALVES[half](*p),
             _named(row=("top", "bottom"), half=("left", "right"))),
    # complex, held out
    Template("a point on the horizontal line through the centre", "complex", "heldout", lambda p: p[1] == 0),
    Template("a point on the vertical line through the centre", "complex", "heldout", lambda p: p[0] == 0),
    Template("the mode {near} the origin", "complex", "heldout",
             lambda p, near: p == _NEIGHBOURS_HELDOUT[near], _named(near=tuple(_NEIGHBOURS_HELDOUT))),
    Template("a mode in the {v}-{h} quadrant", "complex", "heldout",
             lambda p, v, h: _HALVES["top" if v == "upper" else "bottom"](*p) and _HALVES[h](*p),
             _named(v=("upper", "lower"), h=("left", "right"))),
    Template("the point farthest to the {h} in the {row} row", "complex", "heldout",
             lambda p, h, row: p == (_COLUMNS[h], _ROWS[row]), _named(h=("left", "right"), row=("top", "bottom"))),
    Template("a point on the diagonal from the bottom-left to the top-right corner", "complex", "heldout",
             lambda p: p[0] == p[1]),
    Template("a point on the diagonal from the top-left to the bottom-right corner", "complex", "heldout",
             lambda p: p[0] == -p[1]),
    Template("a point in the interior of the grid, away from its edge", "complex", "heldout",
             lambda p: max(abs(p[0]), abs(p[1])) < 4),
    Template("a point at distance two from the centre", "complex", "heldout",
             lambda p: p[0] ** 2 + p[1] ** 2 == 4),
    Template("a point whose coordinates are both negative", "complex", "heldout",
             lambda p: p[0] < 0 and p[1] < 0),
)


def _digit_attributes() -> list:
    return list(range(10))


def _grid_attributes() -> list:
    from .registry import get_dataset

    means = get_dataset("gmm-grid25").mixture.means
    points = [(int(round(float(x))), int(round(float(y)))) for x, y in means.tolist()]
    if any(abs(float(m) - round(float(m))) > 1e-9 for m in means.flatten().tolist()):
        raise RuntimeError("gmm-grid25 means are no longer integers; the grid prompts need updating")
    return points


@dataclass(frozen=True)
class _Spec:
    n_classes: int
    attributes: Callable[[], list]
    fields: Callable[[dict], dict]
    templates: tuple[Template, ...]
    describe: Callable[[object], str]


_SPECS = {
    "digits": _Spec(10, _digit_attributes, _digit_fields, _DIGIT_TEMPLATES, lambda n: WORDS[n]),
    "gmm-grid25": _Spec(25, _grid_attributes, _grid_fields, _GRID_TEMPLATES, lambda p: f"({p[0]}, {p[1]})"),
}


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise unknown_name(kind, str(value), allowed)


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise InputError(f"rng must be a numpy Generator or a seed (an integer >= 0), got {rng!r}")


@dataclass(frozen=True)
class PromptSet:
    """The prompts of one dataset (``"digits"`` or ``"gmm-grid25"``), built from its templates.

    ``PromptSet(name)`` builds and checks them (every class set non-empty and not every class; the splits
    disjoint by text; one text, one meaning). ``class_names[c]`` is a short description of class c."""
    dataset: str
    n_classes: int = field(init=False)
    class_names: tuple[str, ...] = field(init=False)
    all_prompts: tuple[Prompt, ...] = field(init=False, repr=False)
    _by_text: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.dataset not in _SPECS:
            raise unknown_name("prompted dataset", str(self.dataset), _SPECS)
        spec = _SPECS[self.dataset]
        attributes = spec.attributes()
        if len(attributes) != spec.n_classes:
            raise RuntimeError(f"{self.dataset}: {len(attributes)} classes, expected {spec.n_classes}")
        prompts, by_text = [], {}
        for template in spec.templates:
            for args in template.bindings:
                classes = frozenset(c for c, a in enumerate(attributes) if template.meaning(a, **args))
                if not classes or len(classes) == spec.n_classes:
                    continue  # says nothing: no class, or every class
                if template.kind == "simple" and len(classes) != 1:
                    raise RuntimeError(f"simple template {template.wording!r} denotes {sorted(classes)}")
                prompt = Prompt(template.wording.format(**spec.fields(args)), classes, template.kind,
                                template.split, template.wording)
                if prompt.text in by_text:
                    raise RuntimeError(f"{self.dataset}: the text {prompt.text!r} is written twice "
                                       f"({by_text[prompt.text].template!r} and {template.wording!r})")
                by_text[prompt.text] = prompt
                prompts.append(prompt)
        object.__setattr__(self, "n_classes", spec.n_classes)
        object.__setattr__(self, "class_names", tuple(spec.describe(a) for a in attributes))
        object.__setattr__(self, "all_prompts", tuple(prompts))
        object.__setattr__(self, "_by_text", by_text)

    def _select(self, kind: str, split: str) -> list[Prompt]:
        _check_choice("prompt kind", kind, KINDS + (_ANY,))
        _check_choice("prompt split", split, PROMPT_SPLITS + (_ANY,))
        return [p for p in self.all_prompts if kind in (_ANY, p.kind) and split in (_ANY, p.split)]

    def prompts(self, kind: str = "simple", split: str = "train") -> list[Prompt]:
        """The prompts of a kind (``simple``, ``complex`` or ``any``) and split (``train``, ``heldout`` or
        ``any``), in template order."""
        return self._select(kind, split)

    def texts(self, kind: str = "simple", split: str = "train") -> list[str]:
        """The texts of :meth:`prompts` (e.g. to encode them all at once)."""
        return [p.text for p in self._select(kind, split)]

    def _check_label(self, label) -> int:
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < self.n_classes:
            raise InputError(f"unknown class {label!r} for {self.dataset}; classes are 0..{self.n_classes - 1}")
        return int(label)

    def candidates(self, label: int, kind: str = "simple", split: str = "train") -> list[Prompt]:
        """The prompts of that kind and split whose class set contains ``label``."""
        label = self._check_label(label)
        return [p for p in self._select(kind, split) if label in p.classes]

    def prompt_for(self, label: int, rng, kind: str = "simple", split: str = "train") -> Prompt:
        """A random prompt whose class set contains ``label`` (for training a text-conditional model).

        Drawn in two stages so that every wording counts alike: a template uniformly among those with a
        prompt containing the label, then one of that template's such prompts uniformly. ``rng``: a numpy
        ``Generator`` (advanced) or an integer seed. Every class has such a prompt for every kind and split."""
        rng = _as_rng(rng)
        options = self.candidates(label, kind, split)
        if not options:  # cannot happen for the built-in sets (a test checks); a clear line if it ever does
            raise InputError(f"{self.dataset} has no {kind} {split} prompt for class {label}")
        templates = list(dict.fromkeys(p.template for p in options))
        template = templates[int(rng.integers(len(templates)))]
        of_template = [p for p in options if p.template == template]
        return of_template[int(rng.integers(len(of_template)))]

    def prompts_for(self, labels: Sequence[int], rng, kind: str = "simple", split: str = "train") -> list[Prompt]:
        """:meth:`prompt_for` for each label in turn, from one generator."""
        rng = _as_rng(rng)
        return [self.prompt_for(label, rng, kind, split) for label in np.asarray(labels).tolist()]

    def prompt(self, text: str) -> Prompt:
        """The known prompt with exactly this text; a one-line InputError (with close matches) otherwise."""
        if not isinstance(text, str):
            raise InputError(f"a prompt must be a str, got {type(text).__name__}")
        if text in self._by_text:
            return self._by_text[text]
        close = difflib.get_close_matches(text, list(self._by_text), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            f"; list them with get_prompt_set({self.dataset!r}).prompts(kind, split)"
        raise InputError(f"{text!r} is not a known {self.dataset} prompt{hint}")

    def classes_of(self, text: str) -> frozenset[int]:
        """The exact class set of a known prompt text."""
        return self.prompt(text).classes

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and text in self._by_text


def prompt_sets() -> list[str]:
    """The names of the datasets that have prompts."""
    return list(_SPECS)


@lru_cache(maxsize=None)
def _cached(name: str) -> PromptSet:
    return PromptSet(name)


def get_prompt_set(name: str) -> PromptSet:
    """The (cached) :class:`PromptSet` of a dataset name (see :func:`prompt_sets`)."""
    if not isinstance(name, str) or name not in _SPECS:
        raise unknown_name("prompted dataset", str(name), _SPECS)
    return _cached(name)


__all__ = ["Prompt", "PromptSet", "Template", "KINDS", "PROMPT_SPLITS", "prompt_sets", "get_prompt_set"]
