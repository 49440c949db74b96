"""The papers' numbers that the book sets beside its own (``papers.yaml``, shipped with kdlib).

Each table of the file belongs to a paper (a key of the book's ``references.bib``) and says where in the
paper it is, its data split and its *status*: how far its figures were verified (``quoted`` from the
project's source notes, ``recalled``, or ``checked``). Chapters ask for one figure with :func:`figure`; the
appendix page lists every table with :func:`tables`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import KDLibError, check_choice

PATH = Path(__file__).with_name("papers.yaml")


@dataclass(frozen=True)
class Figure:
    value: object  # as the paper prints it (a string such as "85.0/79.9", or a number)
    paper: str  # the bibliography key
    table: str
    row: str
    column: str
    status: str

    def __str__(self) -> str:
        return str(self.value)


@lru_cache(maxsize=None)
def _load(path: str = str(PATH)) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    statuses = data["statuses"]
    for key, paper in data["papers"].items():
        for name, t in paper["tables"].items():
            where = f"{Path(path).name}: {key}/{name}"
            if t["status"] not in statuses:
                raise KDLibError(f"{where}: status {t['status']!r}; valid choices: {', '.join(statuses)}")
            for row, values in t["rows"].items():
                if len(values) != len(t["columns"]):
                    raise KDLibError(f"{where}: row {row!r} has {len(values)} values for "
                                     f"{len(t['columns'])} columns")
    return data


def statuses() -> dict:
    """Status name → what it means."""
    return dict(_load()["statuses"])


def table_info(paper: str, table: str) -> dict:
    papers = _load()["papers"]
    check_choice("paper", paper, papers)
    check_choice(f"table of {paper}", table, papers[paper]["tables"])
    return {"paper": paper, "table": table, "short": papers[paper]["short"], "title": papers[paper]["title"],
            **papers[paper]["tables"][table]}


def figure(paper: str, table: str, row: str, column: str | None = None) -> Figure:
    """One figure of a paper's table (the only column if ``column`` is not given)."""
    t = table_info(paper, table)
    check_choice(f"row of {paper}/{table}", row, t["rows"])
    if column is None:
        if len(t["columns"]) != 1:
            raise KDLibError(f"{paper}/{table} has several columns; valid choices: {', '.join(t['columns'])}")
        column = t["columns"][0]
    check_choice(f"column of {paper}/{table}", column, t["columns"])
    value = t["rows"][row][t["columns"].index(column)]
    if value is None:
        raise KDLibError(f"{paper}/{table} gives no figure for {row!r}, {column!r}")
    return Figure(value, paper, table, row, column, t["status"])


def source(paper: str, table: str) -> str:
    """One line for a results table: whose figures, which table, which split, how verified."""
    t = table_info(paper, table)
    return f"{t['short']}, {t['where']}, {t['split']} split ({t['status']})"


def tables():
    """Every table as ``(info, DataFrame)``, in the file's order (for the appendix page)."""
    import pandas as pd

    for paper, p in _load()["papers"].items():
        for name in p["tables"]:
            info = table_info(paper, name)
            rows = {r: [_as_printed(v) for v in values] for r, values in info["rows"].items()}
            yield info, pd.DataFrame.from_dict(rows, orient="index", columns=info["columns"])


def _as_printed(v) -> str:
    """A figure as a paper prints it: strings as they are, 335e6 as "335M", 1060.0 as "1060", none as "–"."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v:g}"
