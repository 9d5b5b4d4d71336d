"""The job state table (core/job_states.py) and its drawing (docs/lifecycles.md) say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.job_states import NEW, STATUSES, TERMINAL, TRANSITIONS, Transition
from core.jobs import JobStore

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[3] / "docs" / "lifecycles.md"
EDGE = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)\s*:\s*([a-z, ]+):\s*([a-z_, ]+)\s*$")


def drawn_job_edges(text: str) -> set[tuple[str, str, frozenset[str], frozenset[str]]]:
    """``source --> target: actors: methods`` lines of the first Mermaid block (the job's)."""
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    edges = set()
    for line in block.splitlines():
        if line.strip().endswith("--> [*]"):
            continue  # the ends of the terminal states
        match = EDGE.match(line)
        if "-->" in line:
            assert match, f"a transition line the test cannot read: {line!r}"
        if match:
            source, target, actors, via = match.groups()
            edges.add((source, target, frozenset(a.strip() for a in actors.split(",")),
                       frozenset(v.strip() for v in via.split(","))))
    return edges


def table_edges(transitions: tuple[Transition, ...]) -> set[tuple[str, str, frozenset[str], frozenset[str]]]:
    return {(t.source, t.target, frozenset(t.actors), frozenset(t.via)) for t in transitions}


def test_the_diagram_draws_the_table():
    drawn, table = drawn_job_edges(DOC.read_text()), table_edges(TRANSITIONS)
    assert drawn == table, (f"docs/lifecycles.md and core/job_states.py disagree: only drawn {drawn - table}, "
                            f"only in the table {table - drawn}")


def test_a_transition_added_to_the_code_only_fails_the_comparison():
    extra = Transition("queued", "succeeded", ("worker",), ("finish",), "not a real move")
    assert drawn_job_edges(DOC.read_text()) != table_edges((*TRANSITIONS, extra))


def test_every_state_is_reached_and_terminal_states_are_left_alone():
    sources = {t.source for t in TRANSITIONS}
    assert {t.target for t in TRANSITIONS} == set(STATUSES)
    assert not sources & TERMINAL, "a terminal state never changes"
    assert sources == {NEW, *(set(STATUSES) - TERMINAL)}


def test_each_move_names_the_store_methods_that_make_it():
    for t in TRANSITIONS:
        for method in t.via:
            assert callable(getattr(JobStore, method, None)), f"{t.source} -> {t.target}: no JobStore.{method}"
