"""The code family's built-in problems: a function to write, how to approach it, a reference
solution and its assert tests, six per skill (strings, lists, numbers, dicts)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

_DEF = re.compile(r"^def (\w+)\(.*$", re.MULTILINE)


@dataclass(frozen=True)
class Problem:
    """One function to write: its skill, what it must do, the approach in (title, body) steps,
    the reference solution and the tests (one top-level statement each)."""

    skill: str
    description: str
    approach: tuple[tuple[str, str], ...]
    solution: str
    tests: str

    @property
    def entry_point(self) -> str:
        return _DEF.search(self.solution).group(1)

    @property
    def signature(self) -> str:
        """The solution's `def` line without its colon, e.g. `def f(x: int) -> int`."""
        return _DEF.search(self.solution).group(0).removesuffix(":")


def _problem(skill: str, description: str, approach: tuple[tuple[str, str], ...], solution: str,
             tests: str) -> Problem:
    return Problem(skill, " ".join(description.split()), approach,
                   textwrap.dedent(solution).strip(), textwrap.dedent(tests).strip())


PROBLEMS: tuple[Problem, ...] = (
    _problem(
        "strings",
        "Return the words of `text` in reverse order, joined by single spaces. Words are separated "
        "by any amount of whitespace; leading and trailing whitespace is ignored.",
        (("Split into words", "`text.split()` with no argument splits on any run of whitespace "
          "and never yields empty words, so the extra spaces disappear."),
         ("Reverse and join", "Reverse the list with `[::-1]` and join it with single spaces; an "
          "empty text gives no words and so an empty string.")),
        """
        def reverse_words(text: str) -> str:
            return " ".join(text.split()[::-1])
        """,
        """
        assert reverse_words("hello world") == "world hello"
        assert reverse_words("  one   two three ") == "three two one"
        assert reverse_words("single") == "single"
        assert reverse_words("") == ""
        """,
    ),
    _problem(
        "strings",
        "Return True when `text` reads the same forwards and backwards, counting only letters and "
        "digits and ignoring case, otherwise False. A text without letters or digits is a palindrome.",
        (("Keep letters and digits", "Walk the text and keep `char.lower()` for each character "
          "where `char.isalnum()` is true; spaces and punctuation drop out."),
         ("Compare with the reverse", "The text is a palindrome exactly when the kept characters "
          "equal their reverse; an empty list equals its reverse, as required.")),
        """
        def is_palindrome(text: str) -> bool:
            kept = [char.lower() for char in text if char.isalnum()]
            return kept == kept[::-1]
        """,
        """
        assert is_palindrome("A man, a plan, a canal: Panama")
        assert not is_palindrome("race a car")
        assert is_palindrome("")
        assert is_palindrome("No 'x' in Nixon")
        assert not is_palindrome("ab")
        """,
    ),
    _problem(
        "strings",
        "Return how many vowels (a, e, i, o, u, in either case) `text` contains. The letter y is "
        "not a vowel.",
        (("Count lower-cased vowels", "Lower-case the text once so both cases match, then count "
          "the characters that are in the string \"aeiou\"."),),
        """
        def count_vowels(text: str) -> int:
            return sum(1 for char in text.lower() if char in "aeiou")
        """,
        """
        assert count_vowels("Hello World") == 3
        assert count_vowels("rhythm") == 0
        assert count_vowels("AEIOU aeiou") == 10
        """,
    ),
    _problem(
        "strings",
        "Compress `text` with run-length encoding: each run of one repeated character becomes the "
        "character followed by the run's length, so \"aaabcc\" becomes \"a3b1c2\". An empty text "
        "gives an empty string.",
        (("Find each run", "From a start index, move an end index forward while the character "
          "there equals the one at the start; the run's length is end - start."),
         ("Record the run", "Append the character followed by the length to a list of parts, "
          "then continue from the end of the run."),
         ("Join the parts", "Join the parts into one string; an empty text has no runs, so the "
          "result is empty.")),
        """
        def run_length_encode(text: str) -> str:
            parts = []
            start = 0
            while start < len(text):
                end = start
                while end < len(text) and text[end] == text[start]:
                    end += 1
                parts.append(f"{text[start]}{end - start}")
                start = end
            return "".join(parts)
        """,
        """
        assert run_length_encode("aaabcc") == "a3b1c2"
        assert run_length_encode("") == ""
        assert run_length_encode("z") == "z1"
        assert run_length_encode("aabbaa") == "a2b2a2"
        assert run_length_encode("1111111111") == "110"
        """,
    ),
    _problem(
        "strings",
        "Return `text` with the first character of every word upper-cased and the rest of the word "
        "lower-cased. Words are separated by spaces, and the spaces are kept exactly as they are "
        "(two spaces in a row stay two spaces).",
        (("Split on single spaces", "`text.split(\" \")` keeps an empty string between two "
          "spaces, so joining with \" \" afterwards restores the spacing exactly."),
         ("Capitalize each word", "Use `word[:1].upper() + word[1:].lower()`: the slice is safe "
          "on empty words, and a leading digit stays as it is.")),
        """
        def capitalize_words(text: str) -> str:
            return " ".join(word[:1].upper() + word[1:].lower() for word in text.split(" "))
        """,
        """
        assert capitalize_words("hello world") == "Hello World"
        assert capitalize_words("hELLO  wORLD") == "Hello  World"
        assert capitalize_words("") == ""
        assert capitalize_words("3rd place") == "3rd Place"
        """,
    ),
    _problem(
        "strings",
        "Return the longest string that every word in `words` starts with. An empty list, or words "
        "with nothing in common, give an empty string.",
        (("Start from the first word", "The common prefix can be no longer than the first word, "
          "so take it as the candidate; an empty list has no prefix at all."),
         ("Shorten until it fits", "For each other word, drop the candidate's last character "
          "while the word does not start with it; the empty string fits every word, so this ends.")),
        """
        def longest_common_prefix(words: list[str]) -> str:
            if not words:
                return ""
            prefix = words[0]
            for word in words[1:]:
                while not word.startswith(prefix):
                    prefix = prefix[:-1]
            return prefix
        """,
        """
        assert longest_common_prefix(["flower", "flow", "flight"]) == "fl"
        assert longest_common_prefix(["dog", "racecar", "car"]) == ""
        assert longest_common_prefix([]) == ""
        assert longest_common_prefix(["same", "same"]) == "same"
        assert longest_common_prefix(["a"]) == "a"
        assert longest_common_prefix(["prefix", "pre", ""]) == ""
        """,
    ),
    _problem(
        "lists",
        "Return the running totals of `numbers`: item i of the result is the sum of the first i + 1 "
        "numbers. An empty list gives an empty list.",
        (("Keep a running sum", "Walk the numbers once, adding each to a total and appending the "
          "total after each addition; this is linear, unlike summing every prefix again."),),
        """
        def running_total(numbers: list[int]) -> list[int]:
            totals = []
            total = 0
            for number in numbers:
                total += number
                totals.append(total)
            return totals
        """,
        """
        assert running_total([1, 2, 3, 4]) == [1, 3, 6, 10]
        assert running_total([]) == []
        assert running_total([5, -5, 5]) == [5, 0, 5]
        """,
    ),
    _problem(
        "lists",
        "Return the items of `items` without repeats, keeping the first occurrence of each, in the "
        "original order. The items are hashable.",
        (("Remember what was seen", "A set answers \"seen before?\" in constant time; a list of "
          "kept items preserves the order (a set alone would not)."),
         ("Keep first occurrences", "Append an item and add it to the set only when it is not in "
          "the set yet.")),
        """
        def dedupe(items: list) -> list:
            seen = set()
            kept = []
            for item in items:
                if item not in seen:
                    seen.add(item)
                    kept.append(item)
            return kept
        """,
        """
        assert dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]
        assert dedupe([]) == []
        assert dedupe(["a", "b", "a"]) == ["a", "b"]
        assert dedupe([1, 1, 1]) == [1]
        """,
    ),
    _problem(
        "lists",
        "Split `items` into consecutive chunks of `size` items; the last chunk holds what is left "
        "and may be shorter. Raise ValueError when `size` is less than 1.",
        (("Reject a bad size", "A size below 1 would never advance through the list, so raise "
          "ValueError first."),
         ("Slice at multiples of size", "`range(0, len(items), size)` gives each chunk's start, "
          "and `items[start:start + size]` stops at the end of the list by itself.")),
        """
        def chunk(items: list, size: int) -> list[list]:
            if size < 1:
                raise ValueError(f"size must be at least 1, got {size}")
            return [items[start:start + size] for start in range(0, len(items), size)]
        """,
        """
        assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
        assert chunk([1, 2, 3], 3) == [[1, 2, 3]]
        assert chunk([], 4) == []
        assert chunk([1, 2], 5) == [[1, 2]]
        try:
            chunk([1], 0)
        except ValueError:
            pass
        else:
            raise AssertionError("size 0 must raise ValueError")
        """,
    ),
    _problem(
        "lists",
        "Return the second largest distinct value in `numbers`, or None when there are fewer than "
        "two distinct values.",
        (("Drop repeats", "Equal values must count once, so work on `set(numbers)`."),
         ("Sort descending", "Sort the distinct values from largest to smallest; the answer is "
          "the item at index 1 when there are at least two of them, else None.")),
        """
        def second_largest(numbers: list[int]) -> int | None:
            distinct = sorted(set(numbers), reverse=True)
            return distinct[1] if len(distinct) >= 2 else None
        """,
        """
        assert second_largest([4, 1, 3, 4]) == 3
        assert second_largest([7]) is None
        assert second_largest([2, 2, 2]) is None
        assert second_largest([-1, -5, -3]) == -3
        assert second_largest([]) is None
        """,
    ),
    _problem(
        "lists",
        "Rotate `items` to the right by `k` places: the last k items move to the front. `k` may be "
        "larger than the length, or negative (which rotates left). An empty list stays empty.",
        (("Reduce the shift", "Rotating by the length changes nothing, so use `k % len(items)`; "
          "Python's modulo of a negative k is already the equivalent right shift."),
         ("Join two slices", "The result is the last `shift` items followed by the rest; a shift "
          "of 0 returns a copy, and an empty list returns early (no modulo by zero).")),
        """
        def rotate_right(items: list, k: int) -> list:
            if not items:
                return []
            shift = k % len(items)
            return items[-shift:] + items[:-shift] if shift else list(items)
        """,
        """
        assert rotate_right([1, 2, 3, 4, 5], 2) == [4, 5, 1, 2, 3]
        assert rotate_right([1, 2, 3], 4) == [3, 1, 2]
        assert rotate_right([1, 2, 3], -1) == [2, 3, 1]
        assert rotate_right([], 3) == []
        assert rotate_right([1, 2], 0) == [1, 2]
        """,
    ),
    _problem(
        "lists",
        "Return the items of `nested`, a list whose items are numbers or further lists nested to any "
        "depth, as one flat list in left-to-right order.",
        (("Recurse into lists", "For each item, a list is flattened by the same function and its "
          "items extend the result; any other item is appended as it is."),
         ("Empty lists vanish", "An empty inner list flattens to nothing, so `[[[]], [1]]` "
          "gives `[1]`.")),
        """
        def flatten(nested: list) -> list:
            flat = []
            for item in nested:
                if isinstance(item, list):
                    flat.extend(flatten(item))
                else:
                    flat.append(item)
            return flat
        """,
        """
        assert flatten([1, [2, [3, 4]], 5]) == [1, 2, 3, 4, 5]
        assert flatten([]) == []
        assert flatten([[[]], [1]]) == [1]
        assert flatten([[1, 2], [3], 4]) == [1, 2, 3, 4]
        """,
    ),
    _problem(
        "numbers",
        "Return True when `n` is a prime number, otherwise False. Numbers below 2 are not prime.",
        (("Rule out small numbers", "0, 1 and negative numbers are not prime."),
         ("Trial division up to the square root", "If n has a divisor other than 1 and n, it has "
          "one no larger than its square root, so try divisors while `divisor * divisor <= n`.")),
        """
        def is_prime(n: int) -> bool:
            if n < 2:
                return False
            divisor = 2
            while divisor * divisor <= n:
                if n % divisor == 0:
                    return False
                divisor += 1
            return True
        """,
        """
        assert is_prime(2) and is_prime(13) and is_prime(97)
        assert not is_prime(1) and not is_prime(0) and not is_prime(-7)
        assert not is_prime(91)
        assert not is_prime(49)
        """,
    ),
    _problem(
        "numbers",
        "Return the sum of the decimal digits of `n`; the sign of a negative number is ignored.",
        (("Ignore the sign", "Work on `abs(n)`."),
         ("Peel off digits", "`n % 10` is the last digit and `n //= 10` removes it; add digits "
          "until n is 0, which also makes digit_sum(0) = 0.")),
        """
        def digit_sum(n: int) -> int:
            total = 0
            n = abs(n)
            while n:
                total += n % 10
                n //= 10
            return total
        """,
        """
        assert digit_sum(1234) == 10
        assert digit_sum(0) == 0
        assert digit_sum(-905) == 14
        """,
    ),
    _problem(
        "numbers",
        "Return the greatest common divisor of the integers `a` and `b`, never negative; the "
        "greatest common divisor of 0 and 0 is 0.",
        (("Make both non-negative", "Divisors do not depend on sign, so take absolute values."),
         ("Euclid's algorithm", "Replace (a, b) by (b, a % b) until b is 0; a is then the greatest "
          "common divisor, and gcd(0, 0) comes out as 0.")),
        """
        def greatest_common_divisor(a: int, b: int) -> int:
            a, b = abs(a), abs(b)
            while b:
                a, b = b, a % b
            return a
        """,
        """
        assert greatest_common_divisor(12, 18) == 6
        assert greatest_common_divisor(17, 5) == 1
        assert greatest_common_divisor(0, 9) == 9
        assert greatest_common_divisor(-24, 36) == 12
        assert greatest_common_divisor(0, 0) == 0
        """,
    ),
    _problem(
        "numbers",
        "Return a list of strings for the numbers 1 to `n`: \"Fizz\" for multiples of 3, \"Buzz\" "
        "for multiples of 5, \"FizzBuzz\" for multiples of both, and the number itself otherwise. "
        "n = 0 gives an empty list.",
        (("Build the word from two checks", "Concatenate \"Fizz\" when the number divides by 3 "
          "and \"Buzz\" when it divides by 5; a multiple of 15 gets both, in that order."),
         ("Fall back to the number", "When the word is empty, use `str(number)` instead; "
          "`range(1, n + 1)` is empty for n = 0.")),
        """
        def fizzbuzz(n: int) -> list[str]:
            words = []
            for number in range(1, n + 1):
                word = ("Fizz" if number % 3 == 0 else "") + ("Buzz" if number % 5 == 0 else "")
                words.append(word or str(number))
            return words
        """,
        """
        assert fizzbuzz(5) == ["1", "2", "Fizz", "4", "Buzz"]
        assert fizzbuzz(15)[-1] == "FizzBuzz"
        assert fizzbuzz(0) == []
        assert len(fizzbuzz(30)) == 30
        """,
    ),
    _problem(
        "numbers",
        "Return the binary representation of the non-negative integer `n` as a string of 0s and 1s, "
        "with no prefix and no leading zeros; 0 is \"0\".",
        (("Handle zero", "The loop below produces no digit for 0, so return \"0\" first."),
         ("Collect remainders", "`n % 2` is the lowest bit and `n //= 2` shifts it away; the bits "
          "come out lowest first, so reverse them before joining.")),
        """
        def to_binary(n: int) -> str:
            if n == 0:
                return "0"
            digits = []
            while n:
                digits.append(str(n % 2))
                n //= 2
            return "".join(reversed(digits))
        """,
        """
        assert to_binary(0) == "0"
        assert to_binary(5) == "101"
        assert to_binary(8) == "1000"
        assert to_binary(255) == "11111111"
        assert all(to_binary(k) == bin(k)[2:] for k in range(64))
        """,
    ),
    _problem(
        "numbers",
        "Return how many steps the Collatz process takes to reach 1 from `n`: an even number is "
        "halved, an odd number k becomes 3k + 1. collatz_steps(1) is 0. Raise ValueError when `n` "
        "is less than 1.",
        (("Reject n below 1", "0 and negative numbers never reach 1, so raise ValueError."),
         ("Count the moves", "Apply the rule until n is 1, counting each application; use `//` "
          "so n stays an integer.")),
        """
        def collatz_steps(n: int) -> int:
            if n < 1:
                raise ValueError(f"n must be at least 1, got {n}")
            steps = 0
            while n != 1:
                n = n // 2 if n % 2 == 0 else 3 * n + 1
                steps += 1
            return steps
        """,
        """
        assert collatz_steps(1) == 0
        assert collatz_steps(6) == 8
        assert collatz_steps(27) == 111
        try:
            collatz_steps(0)
        except ValueError:
            pass
        else:
            raise AssertionError("n = 0 must raise ValueError")
        """,
    ),
    _problem(
        "dicts",
        "Count the words of `text`: split it on whitespace, lower-case each word, and return a dict "
        "from each word to the number of times it occurs. Punctuation is part of a word.",
        (("Normalize and split", "Lower-case the whole text, then `split()` it on whitespace."),
         ("Count with get", "`counts[word] = counts.get(word, 0) + 1` starts an unseen word at 0.")),
        """
        def word_counts(text: str) -> dict[str, int]:
            counts = {}
            for word in text.lower().split():
                counts[word] = counts.get(word, 0) + 1
            return counts
        """,
        """
        assert word_counts("the cat and The hat") == {"the": 2, "cat": 1, "and": 1, "hat": 1}
        assert word_counts("") == {}
        assert word_counts("Go go GO") == {"go": 3}
        """,
    ),
    _problem(
        "dicts",
        "Invert `mapping`: return a dict from each of its values to the sorted list of the keys "
        "that map to that value.",
        (("Group keys by value", "Several keys may share a value, so collect them in lists with "
          "`inverted.setdefault(value, []).append(key)`."),
         ("Sort each group", "Return each list sorted, so the result does not depend on the order "
          "of the input.")),
        """
        def invert_mapping(mapping: dict[str, int]) -> dict[int, list[str]]:
            inverted = {}
            for key, value in mapping.items():
                inverted.setdefault(value, []).append(key)
            return {value: sorted(keys) for value, keys in inverted.items()}
        """,
        """
        assert invert_mapping({"a": 1, "b": 2, "c": 1}) == {1: ["a", "c"], 2: ["b"]}
        assert invert_mapping({}) == {}
        assert invert_mapping({"z": 0, "y": 0, "x": 0}) == {0: ["x", "y", "z"]}
        assert invert_mapping({"only": 5}) == {5: ["only"]}
        """,
    ),
    _problem(
        "dicts",
        "Merge two dicts of counts: return a new dict with the keys of either, each mapped to the "
        "sum of its counts in both (a missing key counts 0). Neither input is changed.",
        (("Copy the first", "`dict(first)` is a new dict, so adding to it leaves `first` as it was."),
         ("Add the second", "For each key of `second`, add its count to what the copy holds, "
          "starting from 0 with `get`.")),
        """
        def merge_counts(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
            merged = dict(first)
            for key, count in second.items():
                merged[key] = merged.get(key, 0) + count
            return merged
        """,
        """
        assert merge_counts({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 5, "c": 4}
        assert merge_counts({}, {}) == {}
        assert merge_counts({"x": 1}, {}) == {"x": 1}
        assert merge_counts(left := {"x": 1}, {"x": 2}) == {"x": 3} and left == {"x": 1}
        """,
    ),
    _problem(
        "dicts",
        "Group `words` by length: return a dict from each length to the list of the words of that "
        "length, in the order they appear in `words`.",
        (("One list per length", "`groups.setdefault(len(word), []).append(word)` creates a "
          "length's list on first use; appending in input order keeps the order."),
         ("Return the groups", "Dicts keep insertion order, and an empty input gives `{}`.")),
        """
        def group_by_length(words: list[str]) -> dict[int, list[str]]:
            groups = {}
            for word in words:
                groups.setdefault(len(word), []).append(word)
            return groups
        """,
        """
        assert group_by_length(["hi", "cat", "to", "dog"]) == {2: ["hi", "to"], 3: ["cat", "dog"]}
        assert group_by_length([]) == {}
        assert group_by_length(["", "a"]) == {0: [""], 1: ["a"]}
        """,
    ),
    _problem(
        "dicts",
        "Return the item that occurs most often in `items`; when several tie, the one that occurs "
        "first in the list wins. An empty list gives None.",
        (("Count in first-seen order", "A dict of counts keeps its keys in the order they were "
          "first seen."),
         ("Pick the strict maximum", "Walk the counts in that order and replace the best item only "
          "when a count is strictly larger, so the earliest of tied items stays; no items leaves None.")),
        """
        def most_frequent(items: list[str]) -> str | None:
            counts = {}
            for item in items:
                counts[item] = counts.get(item, 0) + 1
            best = None
            for item in counts:
                if best is None or counts[item] > counts[best]:
                    best = item
            return best
        """,
        """
        assert most_frequent(["a", "b", "b", "c"]) == "b"
        assert most_frequent(["x", "y", "y", "x"]) == "x"
        assert most_frequent([]) is None
        assert most_frequent(["solo"]) == "solo"
        assert most_frequent(["b", "a", "a", "b", "c"]) == "b"
        """,
    ),
    _problem(
        "dicts",
        "Look up a dotted `path` such as \"a.b.c\" in the nested dict `data`, each part of the path "
        "a key one level deeper, and return the value found. Return `default` when a key is missing "
        "or a value on the way is not a dict.",
        (("Walk the path", "Split the path on \".\" and step into the current value one key at a "
          "time."),
         ("Stop early", "Before each step, check that the current value is a dict holding the key; "
          "if not, return `default` instead of raising.")),
        """
        def nested_get(data: dict, path: str, default=None):
            value = data
            for key in path.split("."):
                if not isinstance(value, dict) or key not in value:
                    return default
                value = value[key]
            return value
        """,
        """
        assert nested_get({"a": {"b": {"c": 1}}}, "a.b.c") == 1
        assert nested_get({"a": {"b": 2}}, "a.x") is None
        assert nested_get({"a": 5}, "a.b", default="none") == "none"
        assert nested_get({"a": {"b": 2}}, "a") == {"b": 2}
        assert nested_get({}, "a", 0) == 0
        """,
    ),
)
