"""`make mutation`: mutmut over the pure modules (``[tool.mutmut]`` in pyproject.toml), then
docs/mutation.md: the kill rate per module and every surviving mutant with its diff and the reason
it is harmless. Reasons already written in the report are kept for a survivor whose diff is
unchanged; a new survivor is listed as unexplained (to be killed by a test or explained).

    python -m tests.mutation [run|survivors|report] [mutmut run arguments...]

``survivors`` re-runs only the mutants that were not killed last time (after new tests), keeping
every other verdict: quicker than `make mutation`, which starts from scratch.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPORT = Path("docs/mutation.md")
UNEXPLAINED = "UNEXPLAINED: kill it with a test or say why it is equivalent."
TARGET_KILL_RATE = 0.90
# mutmut's verdicts that mean a test noticed the mutant.
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}


def _pytest_compat() -> None:
    """mutmut (3.7) reads ``item._nodeid``, which pytest 9.2 no longer has; ``nodeid`` is the same."""
    from _pytest import nodes

    if not hasattr(nodes.Node, "_nodeid"):
        nodes.Node._nodeid = property(lambda self: self.nodeid)  # type: ignore[attr-defined]


def run(args: list[str]) -> None:
    from mutmut.__main__ import cli

    _pytest_compat()
    cli.main(["run", *args], standalone_mode=False)


@dataclass(frozen=True)
class Survivor:
    name: str
    status: str
    diff: str


def _results() -> tuple[dict[str, Counter[str]], list[Survivor]]:
    from mutmut.__main__ import (
        Config,
        SourceFileMutationData,
        get_diff_for_mutant,
        status_by_exit_code,
        walk_mutatable_files,
    )

    Config.ensure_loaded()
    by_module: dict[str, Counter[str]] = {}
    survivors = []
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        counts: Counter[str] = Counter()
        for name, exit_code in data.exit_code_by_key.items():
            status = status_by_exit_code[exit_code]
            counts[status] += 1
            if status not in DETECTED:
                survivors.append(Survivor(name, status, get_diff_for_mutant(name, path=path).strip()))
        by_module[str(path)] = counts
    return by_module, survivors


def _known_reasons() -> dict[tuple[str, str], str]:
    """(mutant, diff) -> reason, from the report as last written."""
    if not REPORT.exists():
        return {}
    entry = re.compile(
        r"^#### `([^`]+)` \([^)]*\)\n+```diff\n(.*?)\n```\n+(.*?)(?=\n#{2,4} |\Z)", re.M | re.S
    )
    return {(m[1], m[2].strip()): m[3].strip() for m in entry.finditer(REPORT.read_text())}


def _table(by_module: dict[str, Counter[str]]) -> list[str]:
    lines = [
        "| module | mutants | killed | survived | no tests | kill rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    for module, counts in by_module.items():
        total.update(counts)
        lines.append(_row(f"`{module}`", counts))
    lines.append(_row("**all**", total))
    return lines


def _row(label: str, counts: Counter[str]) -> str:
    n = sum(counts.values())
    killed = sum(counts[s] for s in DETECTED)
    rate = f"{killed / n:.1%}" if n else "-"
    flag = "" if not n or killed / n >= TARGET_KILL_RATE else " (below target)"
    return f"| {label} | {n} | {killed} | {counts['survived']} | {counts['no tests']} | {rate}{flag} |"


def report() -> int:
    """Writes docs/mutation.md; the number of survivors without a reason."""
    by_module, survivors = _results()
    reasons = _known_reasons()
    head, _, _ = (REPORT.read_text() if REPORT.exists() else "").partition("\n## Kill rate per module")
    head = head.rstrip() or "# Mutation testing\n\n`make mutation` (mutmut, config in pyproject.toml)."
    lines = [head, "", "## Kill rate per module", "", *_table(by_module), "", "## Survivors", ""]
    unexplained = 0
    for module in by_module:
        prefix = module.removesuffix(".py").replace("/", ".") + "."
        mine = [s for s in survivors if s.name.startswith(prefix)]
        if not mine:
            continue
        lines += [f"### `{module}`", ""]
        for s in mine:
            reason = reasons.get((s.name, s.diff), UNEXPLAINED)
            unexplained += reason == UNEXPLAINED
            lines += [f"#### `{s.name}` ({s.status})", "", "```diff", s.diff, "```", "", reason, ""]
    REPORT.write_text("\n".join(lines).rstrip() + "\n")
    print(f"{REPORT}: {len(survivors)} survivors, {unexplained} without a reason")
    for line in _table(by_module):
        print(line)
    return unexplained


def main() -> None:
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("run", [])
    if command == "run":
        run(args)
        report()
    elif command == "survivors":
        _, survivors = _results()
        if survivors:
            # Which tests reach which function is collected again: a changed test may reach more.
            Path("mutants/mutmut-stats.json").unlink(missing_ok=True)
            run([*args, *(s.name for s in survivors)])
        report()
    elif command == "report":
        report()
    else:
        sys.exit(f"usage: python -m tests.mutation [run|survivors|report] [mutmut args]; not {command!r}")


if __name__ == "__main__":
    main()
