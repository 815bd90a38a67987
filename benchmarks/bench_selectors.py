"""Matching cost of selectors per parameter name: the engines side by side in one run.

Path globs are matched with one Python regex built from fnmatch's atomic translation of each
segment (linear in the name; ``**`` globs walk the segments instead), ``re:`` patterns by RE2.
Measured against the backtracking regex both used before and, for globs, against RE2 through
its Python binding. Then a pathological pattern on BERT-style names of growing length: Python
``re`` multiplies its time with every few characters, RE2 stays flat.

Command:

    .venv/bin/python benchmarks/bench_selectors.py
"""

from __future__ import annotations

import re
import statistics
import time

import re2

from frostline.core._patterns import compile_path_glob, compile_regex

NAMES = [f"encoder.layer.{i}.{part}.{w}" for i in range(24)
         for part in ("attention.self.query", "attention.self.key", "attention.self.value",
                      "attention.output.dense", "intermediate.dense", "output.dense")
         for w in ("weight", "bias")]
ROUNDS = 7


def per_name_us(match, names=NAMES, repeat=20) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(repeat):
            for name in names:
                match(name)
        times.append((time.perf_counter() - start) / (repeat * len(names)) * 1e6)
    return statistics.median(times)


def main() -> None:
    glob = "encoder.layer.1[01].attention"
    old_regex = re.compile(r"encoder\.layer\.1[01]\.attention(?:\..*)?")
    re2_options = re2.Options()
    re2_options.log_errors = False
    via_re2 = re2.compile(r"encoder\.layer\.1[01]\.attention(?:\..*)?", re2_options)
    ours = compile_path_glob(glob)
    assert [ours.fullmatch(n) for n in NAMES] == [bool(old_regex.fullmatch(n)) for n in NAMES]
    rows = [
        ("path glob, frostline (atomic segments)", per_name_us(ours.fullmatch)),
        ("path glob, Python re (before)", per_name_us(old_regex.fullmatch)),
        ("path glob, RE2 Python binding", per_name_us(via_re2.fullmatch)),
    ]
    pattern = r"(query|key)\.weight$"
    rows += [
        ("re: pattern, RE2 (frostline)", per_name_us(compile_regex(pattern).search)),
        ("re: pattern, Python re (before)", per_name_us(re.compile(pattern).search)),
    ]
    base = rows[1][1]
    print(f"{len(NAMES)} BERT-style names, median of {ROUNDS} rounds")
    print("| matcher | us per name | ratio to Python re glob |")
    print("| --- | ---: | ---: |")
    for label, us in rows:
        print(f"| {label} | {us:.2f} | {us / base:.2f} |")

    evil = r"^(\w+\.?)*bias$"
    print(f"\npathological {evil!r} on names that do not match (seconds for one search)")
    print("| name length | Python re | RE2 |")
    print("| ---: | ---: | ---: |")
    slow, fast = re.compile(evil), compile_regex(evil)
    for length in (16, 20, 22, 24):
        name = ("encoder.layer.0.attention.self.query.weight")[:length] + "!"
        start = time.perf_counter()
        assert slow.search(name) is None
        backtracking = time.perf_counter() - start
        start = time.perf_counter()
        assert fast.search(name) is None
        linear = time.perf_counter() - start
        print(f"| {length + 1} | {backtracking:.4f} | {linear:.6f} |")


if __name__ == "__main__":
    main()
