"""`customs-gateway retention status`: what the store holds per retention day, and what is due.

Read-only, with or without the gateway running, and without the passphrase: it counts rows by
their `retain_until` (the store) and lists which day keys exist or were destroyed (`keys/days/`
file names; no key is opened). A day is due once it has passed (UTC): its rows are to be disposed
of and its key destroyed (DESIGN §12 "Retention and disposal"; the gateway's disposal worker does
it, decision 0015). The totals say how many messages are due, disposed of and held."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from ..service.server import open_store
from ..startup.config import Config
from ..startup.daykeys import DAYS_DIR
from ..store.base import RetentionTotals
from .common import add_config_arg, load_cli_config, print_json, result_console


@dataclass(frozen=True)
class RetentionDay:
    day: dt.date | None  # None: rows stored in clear, not sealed yet (the start-up backfill seals them)
    messages: int
    inbox: int
    key: str  # "present" | "destroyed" | "missing"
    due: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": None if self.day is None else self.day.isoformat(),
            "messages": self.messages,
            "inbox": self.inbox,
            "key": self.key,
            "due": self.due,
        }


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("retention", help="retention days and what is due for disposal")
    rsub = p.add_subparsers(dest="retention_verb", metavar="VERB")
    status = rsub.add_parser("status", help="rows and day keys per retention day; which are due")
    add_config_arg(status)
    status.add_argument("--due", action="store_true", help="list only the days that are due")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(func=run_status)


def key_state(days_dir: Path, day: dt.date) -> str:
    if (days_dir / f"{day.isoformat()}.destroyed").exists():
        return "destroyed"
    return "present" if (days_dir / f"{day.isoformat()}.key").exists() else "missing"


def retention_days(counts: list[tuple[dt.date | None, int, int]], days_dir: Path, today: dt.date) -> list[RetentionDay]:
    """One line per day the store holds rows for (rows in clear first), oldest first; a day is
    due once `today` is after it."""
    return [
        RetentionDay(
            day,
            messages,
            inbox,
            "none" if day is None else key_state(days_dir, day),
            day is not None and day < today,
        )
        for day, messages, inbox in sorted(counts, key=lambda c: (c[0] is not None, c[0] or dt.date.min))
    ]


async def _counts(config: Config, today: dt.date) -> tuple[list[tuple[dt.date | None, int, int]], RetentionTotals]:
    store = open_store(config)
    await store.open()
    try:
        return await store.retention_counts(), await store.retention_totals(today)
    finally:
        await store.close()


def run_status(args: argparse.Namespace) -> int:
    config = load_cli_config(args)
    today = dt.datetime.now(dt.timezone.utc).date()
    counts, totals = asyncio.run(_counts(config, today))
    days = retention_days(counts, config.path(config.keys_dir) / DAYS_DIR, today)
    if args.due:
        days = [d for d in days if d.due]
    if args.json:
        print_json(
            {
                "today": today.isoformat(),
                "days": [d.to_dict() for d in days],
                "due": totals.due,
                "disposed": totals.disposed,
                "held": totals.held,
                "oldest_held": None if totals.oldest_held is None else totals.oldest_held.isoformat(),
            }
        )
        return 0
    table = Table("retain until", "messages", "inbox", "day key", "due")
    for d in days:
        label = "in clear (backfill pending)" if d.day is None else d.day.isoformat()
        table.add_row(label, str(d.messages), str(d.inbox), d.key, "due" if d.due else "")
    out = result_console()
    out.print(table)
    due = [d for d in days if d.due]
    out.print(f"{len(due)} day(s) due for disposal ({sum(d.messages + d.inbox for d in due)} rows), today {today}")
    held = f", oldest held from {totals.oldest_held}" if totals.oldest_held else ""
    out.print(f"messages due {totals.due}, disposed of {totals.disposed}, under legal hold {totals.held}{held}")
    return 0
