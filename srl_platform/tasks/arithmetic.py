"""Generated multi-step arithmetic word problems with exact, checkable step-by-step solutions.

A problem is a short story from one template (shopping, inventory, travel, savings, recipe, farm):
an opening fact that is one operation, then 1-4 further events, each one more operation (+, -, ×, ÷)
on the running quantity. Every operation becomes one numbered step; division is always exact and
subtraction never goes below 1, so each answer is a positive integer the steps recompute.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

from srl_platform.steps import format_step
from srl_platform.traces import assign_split, normalize_question

FAMILY = "arithmetic"
MIN_OPS, MAX_OPS = 2, 5

# Operand pickers: (rng, running value) -> operand, or None when no operand fits that value.
Picker = Callable[[random.Random, int], int | None]


def _between(low: int, high: int, step: int = 1) -> Picker:
    return lambda rng, value: rng.randrange(low, high + 1, step)


def _up_to_half(step: int = 1) -> Picker:
    # Subtract at most half, so the quantity stays positive and the event stays plausible; a step
    # keeps round quantities round (grams in 50s), so a later exact division stays possible.
    def pick(rng: random.Random, value: int) -> int | None:
        return step * rng.randint(1, value // 2 // step) if value // 2 >= step else None

    return pick


def _divisor(*candidates: int) -> Picker:
    def pick(rng: random.Random, value: int) -> int | None:
        exact = [d for d in candidates if value % d == 0 and value // d >= 2]
        return rng.choice(exact) if exact else None

    return pick


@dataclass(frozen=True)
class Event:
    """One operation in a story: the sentence that tells it and the step that computes it.

    `sentence`, `title`, `unit` and `question` are format strings over the story's words and `x`,
    the operand. `question` is asked when this event is the story's last.
    """

    op: str
    pick: Picker
    sentence: str
    title: str
    unit: str
    question: str = ""
    requires: int | None = None
    """Index of an earlier event this one only makes sense after (bag price after bag count)."""


@dataclass(frozen=True)
class Template:
    """A story family: its word lists, the opening operation and four optional events.

    The opening computes `a op b`: `start_a` picks a, and the opening event's own picker picks b.
    """

    name: str
    words: dict[str, tuple]
    start_a: Picker
    start: Event
    events: tuple[Event, ...]


_PEOPLE = (
    ("Ava", "she", "her"), ("Liam", "he", "his"), ("Maya", "she", "her"), ("Noah", "he", "his"),
    ("Zoe", "she", "her"), ("Omar", "he", "his"), ("Lena", "she", "her"), ("Ravi", "he", "his"),
    ("Chloe", "she", "her"), ("Mateo", "he", "his"), ("Priya", "she", "her"), ("Kenji", "he", "his"),
)

TEMPLATES: tuple[Template, ...] = (
    Template(
        name="shopping",
        words={"item": ("notebooks", "pens", "stickers", "candles", "markers"),
               "extra": ("backpack", "lunch box", "water bottle", "pencil case")},
        start_a=_between(2, 9),
        start=Event("×", _between(2, 15), "{name} buys {a} packs of {item} that cost ${b} each.",
                    "Cost of the {item}", "dollars"),
        events=(
            Event("+", _between(3, 40), "{He} also buys a {extra} for ${x}.", "Add the {extra}",
                  "dollars", "How many dollars does {name} spend in total?"),
            Event("×", _between(2, 4), "{He} buys the same things every week for {x} weeks.",
                  "Cost over {x} weeks", "dollars",
                  "How many dollars does {name} spend over the {x} weeks?"),
            Event("-", _up_to_half(), "{He} has a coupon for ${x} off the total.", "Apply the coupon",
                  "dollars", "How many dollars does {name} pay after the coupon?"),
            Event("÷", _divisor(2, 3, 4, 5, 6), "The cost is split equally among {x} friends.",
                  "Split the cost {x} ways", "dollars", "How many dollars does each friend pay?"),
        ),
    ),
    Template(
        name="inventory",
        words={"store": ("shop", "warehouse", "market stall", "store"),
               "item": ("puzzles", "light bulbs", "board games", "flashlights", "umbrellas")},
        start_a=_between(3, 12),
        start=Event("×", _between(6, 24), "A {store} has {a} boxes of {item} with {b} in each box.",
                    "Count the {item} in the boxes", "{item}"),
        events=(
            Event("+", _between(5, 60), "A delivery brings {x} more {item}.", "Add the delivery",
                  "{item}", "How many {item} does the {store} have after the delivery?"),
            Event("-", _up_to_half(), "During the day, {x} {item} are sold.",
                  "Subtract the {item} sold", "{item}", "How many {item} are left after the sales?"),
            Event("-", _up_to_half(), "Then {x} {item} are found damaged and thrown away.",
                  "Remove the damaged {item}", "{item}", "How many {item} does the {store} have left?"),
            Event("÷", _divisor(2, 3, 4, 5, 6, 8), "All the {item} are placed equally on {x} shelves.",
                  "Share among {x} shelves", "{item}", "How many {item} go on each shelf?"),
        ),
    ),
    Template(
        name="travel",
        words={},
        start_a=_between(30, 90, 5),
        start=Event("×", _between(2, 6),
                    "{name} drives at {a} kilometers per hour for {b} hours.",
                    "Distance of the first drive", "kilometers"),
        events=(
            Event("+", _between(10, 120, 5), "After a break, {he} drives another {x} kilometers.",
                  "Add the second drive", "kilometers", "How many kilometers does {name} drive in total?"),
            Event("×", _between(2, 5), "{He} makes the same trip on {x} days.", "Distance over {x} days",
                  "kilometers", "How many kilometers does {name} drive over the {x} days?"),
            Event("÷", _divisor(5, 8, 10, 12, 15, 20),
                  "The car uses 1 liter of fuel for every {x} kilometers.", "Fuel used", "liters",
                  "How many liters of fuel does the car use?"),
            Event("×", _between(2, 4), "Fuel costs ${x} per liter.", "Cost of the fuel", "dollars",
                  "How many dollars does {name} spend on fuel?", requires=2),
        ),
    ),
    Template(
        name="savings",
        words={"thing": ("bike helmet", "book", "pair of shoes", "video game", "skateboard")},
        start_a=_between(5, 40),
        start=Event("×", _between(3, 12), "{name} saves ${a} every week for {b} weeks.",
                    "Savings from the weekly deposits", "dollars"),
        events=(
            Event("+", _between(10, 80), "{He} also gets ${x} as a birthday gift.",
                  "Add the birthday gift", "dollars", "How many dollars does {name} have now?"),
            Event("-", _up_to_half(), "{He} spends ${x} on a {thing}.", "Subtract the {thing}",
                  "dollars", "How many dollars does {name} have left?"),
            Event("×", _between(2, 3), "{His} grandmother then multiplies {his} savings by {x}.",
                  "Multiply by {x}", "dollars", "How many dollars does {name} have after that?"),
            Event("÷", _divisor(2, 3, 4, 5, 6), "{He} divides the money equally among {x} jars.",
                  "Split into {x} jars", "dollars", "How many dollars go into each jar?"),
        ),
    ),
    Template(
        name="recipe",
        words={"dish": ("cookies", "pancakes", "muffins", "bread rolls"),
               "ingredient": ("flour", "sugar", "butter", "oats")},
        start_a=_between(50, 300, 50),
        start=Event("×", _between(2, 6),
                    "One batch of {dish} needs {a} grams of {ingredient}. {name} makes {b} batches.",
                    "Total {ingredient} for the batches", "grams"),
        events=(
            Event("+", _between(50, 200, 50), "{He} adds {x} more grams of {ingredient} for decoration.",
                  "Add the {ingredient} for decoration", "grams",
                  "How many grams of {ingredient} does {name} use in total?"),
            Event("-", _up_to_half(50), "{He} already has {x} grams of {ingredient} at home.",
                  "Subtract what is at home", "grams",
                  "How many grams of {ingredient} does {name} still need to buy?"),
            Event("÷", _divisor(50, 100, 250, 500), "The {ingredient} is sold in bags of {x} grams.",
                  "Number of bags", "bags", "How many bags of {ingredient} does {name} buy?"),
            Event("×", _between(2, 9), "Each bag costs ${x}.", "Cost of the bags", "dollars",
                  "How many dollars does {name} spend on {ingredient}?", requires=2),
        ),
    ),
    Template(
        name="farm",
        words={"crop": (("apple trees", "apples"), ("tomato plants", "tomatoes"),
                        ("pepper plants", "peppers"), ("orange trees", "oranges"))},
        start_a=_between(3, 15),
        start=Event("×", _between(4, 20), "A farmer plants {a} rows of {plant} with {b} in each row.",
                    "Count the {plant}", "{plant}"),
        events=(
            Event("+", _between(5, 50), "Later, {x} more {plant} are planted.", "Add the new {plant}",
                  "{plant}", "How many {plant} are there now?"),
            Event("-", _up_to_half(), "{x} of the {plant} do not survive the winter.",
                  "Subtract the lost {plant}", "{plant}", "How many {plant} survive the winter?"),
            Event("×", _between(3, 12), "Each of them gives {x} {fruit}.", "Count the {fruit}", "{fruit}",
                  "How many {fruit} does the farmer harvest?"),
            Event("÷", _divisor(2, 3, 4, 5, 6, 10, 12), "The {fruit} are packed into crates of {x}.",
                  "Fill the crates", "crates", "How many crates does the farmer fill?", requires=2),
        ),
    ),
)

_APPLY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "×": lambda a, b: a * b,
    "÷": lambda a, b: a // b,
}


def _words(template: Template, rng: random.Random) -> dict[str, str]:
    name, he, his = rng.choice(_PEOPLE)
    words = {"name": name, "he": he, "He": he.capitalize(), "his": his, "His": his.capitalize()}
    for key, choices in sorted(template.words.items()):
        choice = rng.choice(choices)
        if key == "crop":
            words["plant"], words["fruit"] = choice
        else:
            words[key] = choice
    return words


def _event_choices(template: Template, count: int) -> list[tuple[int, ...]]:
    """Ordered subsets of `count` optional events in which every event's prerequisite is present."""
    return [
        chosen
        for chosen in combinations(range(len(template.events)), count)
        if all(template.events[i].requires in (None, *chosen) for i in chosen)
    ]


def _story(rng: random.Random) -> tuple[str, str, int, str, int] | None:
    """(question, solution, answer, template name, ops) for one random story; None if it cannot close."""
    template = rng.choice(TEMPLATES)
    num_ops = rng.randint(MIN_OPS, MAX_OPS)
    chosen = rng.choice(_event_choices(template, num_ops - 1))
    words = _words(template, rng)
    a = template.start_a(rng, 0)
    b = template.start.pick(rng, a)
    value = _APPLY[template.start.op](a, b)
    sentences = [template.start.sentence.format(**words, a=a, b=b)]
    steps = [(template.start.title.format(**words), a, template.start.op, b, value,
              template.start.unit.format(**words))]
    question = ""
    for index in chosen:
        event = template.events[index]
        x = event.pick(rng, value)
        if x is None:
            return None
        result = _APPLY[event.op](value, x)
        sentences.append(event.sentence.format(**words, x=x))
        steps.append((event.title.format(**words, x=x), value, event.op, x, result,
                      event.unit.format(**words)))
        question = event.question.format(**words, x=x)
        value = result
    lines = []
    for number, (title, left, op, right, result, unit) in enumerate(steps, start=1):
        body = f"{left} {op} {right} = {result} {unit}."
        if number == len(steps):
            body += f" The answer is {result}."
        lines.append(format_step(number, title, body))
    return " ".join([*sentences, question]), "\n".join(lines), value, template.name, num_ops


def generate_traces(
    n: int, seed: int, splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> list[dict]:
    """`n` distinct arithmetic problems as canonical traces; the same (n, seed) gives the same list.

    Splits follow a hash of the question text, so a problem lands in the same split whatever the
    seed or n, and no question is in two splits. A longer list starts with the shorter one.
    """
    if n < 0:
        raise ValueError(f"n={n}: the number of problems must be >= 0")
    rng = random.Random(seed)
    traces: list[dict] = []
    seen: set[str] = set()
    attempts, max_attempts = 0, 100 * n + 1000
    while len(traces) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"n={n}: only {len(traces)} distinct problems after {max_attempts} attempts; ask for fewer"
            )
        story = _story(rng)
        if story is None:
            continue
        question, solution, answer, template, num_ops = story
        key = normalize_question(question)
        if key in seen:
            continue
        seen.add(key)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        traces.append(
            {
                "id": f"{FAMILY}-{digest}",
                "question": question,
                "solution": solution,
                "answer": str(answer),
                "source": f"generated:{FAMILY}",
                "split": assign_split(question, splits),
                "meta": {"family": FAMILY, "num_ops": num_ops, "template": template},
            }
        )
    return traces



DIMENSIONS = ("template", "num_ops")
"""Weakness dimensions: the story's skill (template) and its size (operations = steps)."""

# Words that give a story's template away, for reading the skill of a problem nobody labelled
# (a proposer model's output): the template with the most hits wins, none → "other".
_TEMPLATE_WORDS = {
    "shopping": ("buy", "bought", "pack", "coupon", "price", "cost"),
    "inventory": ("box", "delivery", "sold", "shelf", "shelves", "warehouse", "store", "stock"),
    "travel": ("drive", "drove", "kilomet", "mile", "trip", "fuel", "speed", "per hour"),
    "savings": ("save", "saving", "gift", "jar", "allowance", "piggy"),
    "recipe": ("batch", "gram", "flour", "sugar", "bake", "cookie", "recipe", "ingredient"),
    "farm": ("farm", "plant", "tree", "rows of", "harvest", "crate", "seed", "orchard"),
}


def dims(trace: dict) -> dict[str, str]:
    """The weakness-dimension values of a generated trace, from its `meta`."""
    meta = trace.get("meta") or {}
    return {"template": str(meta.get("template", "other")), "num_ops": str(meta.get("num_ops", meta.get("num_steps", "?")))}


def classify(question: str) -> dict[str, str]:
    """The template a problem's text reads as (keyword hits), for problems without `meta`."""
    text = question.lower()
    hits = {name: sum(text.count(word) for word in words) for name, words in _TEMPLATE_WORDS.items()}
    best = max(hits, key=hits.get)
    return {"template": best if hits[best] else "other"}
