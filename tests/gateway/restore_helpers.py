"""Back up and restore one gateway's store the way docs/operations.md tells an operator to:
SQLite's online backup while it runs, and pg_dump / pg_restore of its PostgreSQL schema."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path

from customs_gateway.startup.config import Config
from tests.postgres.pg import base_dsn


def _schema(config: Config) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(config.store.dsn).query)
    options = query["options"][0]
    return options.split("search_path=", 1)[1].split()[0]


def backup(config: Config, dest: Path) -> None:
    """A consistent copy of the store, taken while the gateway runs."""
    if config.store.backend == "sqlite":
        src = sqlite3.connect(config.path(config.store.path))
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return
    subprocess.run(
        ["pg_dump", "--dbname", base_dsn(), "--schema", _schema(config), "--format", "custom", "--file", str(dest)],
        check=True,
        capture_output=True,
    )


def restore(config: Config, src: Path) -> None:
    """Replace the (stopped) gateway's store with the backup."""
    if config.store.backend == "sqlite":
        db = config.path(config.store.path)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(src, db)
        return
    schema = _schema(config)
    subprocess.run(
        ["psql", "--dbname", base_dsn(), "--quiet", "--command", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'],
        check=True,
        capture_output=True,
    )
    subprocess.run(["pg_restore", "--dbname", base_dsn(), str(src)], check=True, capture_output=True)
