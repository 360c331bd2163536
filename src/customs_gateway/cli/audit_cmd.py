"""`customs-gateway audit …`: export the audit log as a bundle, verify a bundle offline, show entries.

`audit verify` needs nothing but the bundle file: every public key it checks against travels
inside it, and the auditor compares the printed bundle fingerprints with the ones the two
administrations exchanged. Exit codes of `audit verify`: 0 verified, 1 verification failed,
2 the file cannot be read (or a usage error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, ParamSpec, TypeAlias, TypeVar

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..core.audit import KINDS, AuditEntry
from ..core.audit_bundle import MAX_LINE_BYTES, BundleError, VerifyReport, verify_bundle
from ..core.bundle import SignedBundle
from ..core.encoding import format_ts, json_object, unb64url
from ..core.errors import ConfigError, GatewayError
from ..service.audit_export import ExportSummary, export_bundle
from ..service.crypto_pool import MainlessProcessPool
from ..service.gateway import day_keys
from ..service.server import load_identity, open_store
from ..startup.config import Config
from ..store.sealed import SealedColumns
from . import evidence_cmd
from .common import (
    add_config_arg,
    add_passphrase_arg,
    console,
    get_passphrase,
    load_cli_config,
    print_json,
    result_console,
)

_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
_P = ParamSpec("_P")
_T = TypeVar("_T")

EXIT_VERIFIED: Final = 0
EXIT_FAILED: Final = 1
EXIT_UNREADABLE: Final = 2

_VERIFY_HELP: Final = """\
Verify an audit export, or the evidence file of one message, offline with public keys alone:
the Merkle log against every signed checkpoint, the peer's cosignatures, and every signed
document, receipt and refusal against the entries that name them.

Trust: each side's keys start from a trust anchor, the bundle whose fingerprint the two
administrations exchanged out of band: pass them with --trust FILE (lines `IDENTITY FINGERPRINT`),
or compare the anchor fingerprints the report prints. Every later bundle version must follow from
the one before under the gateway's own rotation rules. The latest checkpoint must be cosigned by
the peer unless --allow-uncosigned. Any change to the file, its last line included, fails.

exit codes:
  0  the file verified
  1  verification failed (the line, entry index, reason and failure code are printed)
  2  the file cannot be read, or the command line is wrong
"""


def register(sub: _SubParsers) -> None:
    p = sub.add_parser("audit", help="export, verify and show the tamper-evident audit log")
    asub = p.add_subparsers(dest="audit_verb", metavar="VERB")

    exp = asub.add_parser("export", help="write this gateway's log (up to its latest checkpoint) as a bundle")
    add_config_arg(exp)
    exp.add_argument("--out", type=Path, required=True, metavar="FILE", help="bundle file to write (JSON Lines)")
    exp.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_passphrase_arg(exp)  # the documents are sealed at rest: opening them takes the store key
    exp.set_defaults(func=run_export)

    ver = asub.add_parser(
        "verify",
        help="verify an export bundle offline (exit 0 verified, 1 failed, 2 unreadable)",
        description=_VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ver.add_argument("bundle", type=Path, metavar="FILE", help="an export bundle or an evidence file")
    ver.add_argument("--json", action="store_true", help="print the report (or the failure) as JSON")
    evidence_cmd.add_trust_args(ver)
    ver.add_argument(
        "--require-cosigned",
        action="store_true",
        help="fail if ANY checkpoint lacks the peer's cosignature (the latest one must always carry it)",
    )
    ver.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes checking signatures beside the reader (default: CPUs - 1, at most 4; 0: none)",
    )
    ver.set_defaults(func=run_verify)

    evidence_cmd.add_parser(asub)

    show = asub.add_parser("show", help="list audit entries from the store or from a bundle (not verified)")
    src = show.add_mutually_exclusive_group()
    src.add_argument("--config", metavar="PATH", help="read the store this configuration names")
    src.add_argument("--bundle", type=Path, metavar="FILE", help="read the entries of an export bundle")
    show.add_argument("--message-id", metavar="ID", help="only entries about this message")
    show.add_argument("--kind", choices=sorted(KINDS), help="only entries of this kind")
    show.add_argument("--since", metavar="TS", help="only entries at or after this time (ISO 8601; UTC if no zone)")
    show.add_argument("--limit", type=int, default=100, metavar="N", help="at most N entries (default 100)")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(func=run_show)


def _progress(label: str) -> Progress:
    out = console()
    return Progress(
        TextColumn(f"[bold]{escape(label)}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    )


def _tracker(progress: Progress, label: str) -> Callable[[int, int], None]:
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


# --- export --------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}", field=what) from e


def run_export(args: argparse.Namespace) -> int:
    config = load_cli_config(args)
    own = _read(config.path(config.keys_dir) / "bundle.json", "own bundle")
    if not config.peer.bundle:
        raise ConfigError("peer.bundle must name the imported peer bundle", field="peer.bundle")
    peer_raw = _read(config.path(config.peer.bundle), "peer bundle")
    peer = config.peer.identity or SignedBundle.from_bytes(peer_raw).bundle.identity
    if config.store.backend == "sqlite" and not config.path(config.store.path).exists():
        raise ConfigError(f"no store at {config.path(config.store.path)}: has this gateway run?", field="store.path")
    identity = load_identity(config, get_passphrase(args))
    if identity.store_key is None:
        raise ConfigError("the identity has no store key", field="keys_dir")
    sealed = SealedColumns(day_keys(config, identity.store_key))
    out_path: Path = args.out
    tmp = out_path.with_name(out_path.name + ".partial")
    with _progress("exporting") as progress:
        track = _tracker(progress, "exporting")
        try:
            # 0600 from the first byte: the export holds every message's signed document.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # an older .partial left by a crash may have another mode
            with os.fdopen(fd, "wb") as f:
                summary = asyncio.run(_export(config, sealed, own, peer, peer_raw, f, track))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    os.replace(tmp, out_path)
    _print_export(summary, out_path, as_json=args.json)
    return 0


async def _export(
    config: Config,
    sealed: SealedColumns,
    own: bytes,
    peer: str,
    peer_raw: bytes,
    out: BinaryIO,
    track: Callable[[int, int], None],
) -> ExportSummary:
    store = open_store(config)
    store.seal_at_rest(sealed)
    await store.open()
    try:
        return await export_bundle(
            store,
            log=config.identity,
            peer=peer,
            own_bundle=own,
            peer_bundle=peer_raw,
            out=out,
            progress=track,
            now=dt.datetime.now(dt.timezone.utc),
        )
    finally:
        await store.close()


def _print_export(s: ExportSummary, path: Path, *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "file": str(path),
                "log": s.log,
                "peer": s.peer,
                "size": s.size,
                "root": s.root.hex(),
                "checkpoints": s.checkpoints,
                "cosigned_checkpoints": s.cosigned_checkpoints,
                "evidence": s.evidence,
                "missing_evidence": s.missing_evidence,
                "bundles": s.bundles,
                "lines": s.lines,
                "bytes": s.bytes,
                "sha256": s.sha256,
            }
        )
        return
    out = console()
    out.print(
        f"[green]Exported[/] {s.entries} entries of {s.log}'s log (up to the checkpoint at size {s.size}), "
        f"{s.checkpoints} checkpoints ({s.cosigned_checkpoints} cosigned), {s.evidence} messages' evidence "
        f"and {s.bundles} key bundles to {escape(str(path))}"
    )
    out.print(f"File SHA-256 (end line): {s.sha256}")
    if s.missing_evidence:
        out.print(f"[yellow]The store lacks the evidence of {s.missing_evidence} messages; verification will fail.[/]")


# --- verify --------------------------------------------------------------------------------


def default_workers() -> int:
    """Signature worker processes for this machine: one core stays with the reader."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class _LazyProcessPool(Executor):
    """A process pool started on the first batch only, so small bundles never pay its start-up."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        if self._pool is None:
            # spawn, not fork: the caller may run threads (progress bar, an event loop).
            self._pool = MainlessProcessPool(self._workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
            self._pool = None


@contextlib.contextmanager
def signature_pool(workers: int) -> Iterator[Executor | None]:
    """An executor for `verify_bundle`'s signature checks (None for workers=0), shut down after."""
    if workers <= 0:
        yield None
        return
    pool = _LazyProcessPool(workers)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_verify(args: argparse.Namespace) -> int:
    path: Path = args.bundle
    workers = default_workers() if args.workers is None else args.workers
    try:
        trust = evidence_cmd.read_trust(args.trust)
    except (OSError, ValueError) as e:
        return _unreadable(args.trust, e, as_json=args.json, code="audit.trust_file")
    try:
        f = path.open("rb")
        evidence = evidence_cmd.is_evidence_file(path)
    except OSError as e:
        return _unreadable(path, e, as_json=args.json)
    if evidence:
        f.close()
        return evidence_cmd.verify_file(path, trust=trust, allow_uncosigned=args.allow_uncosigned, as_json=args.json)
    try:
        with f, _progress("verifying") as progress, signature_pool(workers) as pool:
            report = verify_bundle(
                _lines(f),
                progress=_tracker(progress, "verifying"),
                require_cosigned=args.require_cosigned,
                allow_uncosigned=args.allow_uncosigned,
                trust=trust,
                executor=pool,
            )
    except BundleError as e:
        _print_failure(path, e, as_json=args.json)
        return EXIT_FAILED
    except OSError as e:
        return _unreadable(path, e, as_json=args.json)
    _print_report(path, report, as_json=args.json)
    return EXIT_VERIFIED


def _lines(f: IO[bytes]) -> Iterator[bytes]:
    """The file's lines, none read past MAX_LINE_BYTES + 1 (a file without newlines is not
    loaded whole: the verifier refuses the over-long piece)."""
    while line := f.readline(MAX_LINE_BYTES + 1):
        yield line
        if len(line) > MAX_LINE_BYTES:
            return


def _unreadable(path: Path, e: OSError | ValueError, *, as_json: bool, code: str = "audit.unreadable") -> int:
    reason = f"cannot read {path}: {getattr(e, 'strerror', None) or e}"
    if as_json:
        print_json({"verified": False, "code": code, "detail": reason})
    else:
        console().print(f"[red]Unreadable:[/] {escape(reason)}")
    return EXIT_UNREADABLE


def _print_failure(path: Path, e: BundleError, *, as_json: bool) -> None:
    if as_json:
        print_json({"verified": False, "file": str(path), **e.diagnostics()})
        return
    where = f"line {e.line}" + (f", entry {e.index}" if e.index is not None else "")
    console().print(
        f"[bold red]NOT VERIFIED[/] {escape(str(path))}: {where}: {escape(e.detail)} {escape(f'[{e.code}]')}"
    )


def _print_report(path: Path, r: VerifyReport, *, as_json: bool) -> None:
    if as_json:
        print_json({"verified": True, "file": str(path), **r.to_dict()})
        return
    out = result_console()
    table = Table(title=f"[green]VERIFIED[/] {escape(str(path))}", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold", max_width=100)
    d = r.to_dict()
    rows = [
        ("log", f"{r.log} ({r.origin})"),
        ("peer (witness)", r.peer),
        ("exported at", r.exported_at),
        ("entries", str(r.entries)),
        ("root at size", f"{r.size}: {d['root']}"),
        ("checkpoints", f"{r.checkpoints} ({r.cosigned_checkpoints} cosigned by {r.peer})"),
        ("documents", str(r.documents)),
        ("disposed", f"{r.disposed} (documents withheld after their disposed entries)"),
        ("receipts", str(r.receipts)),
        ("refusals", str(r.refusals)),
        ("key bundles", str(r.bundles)),
        ("keys used", "\n".join(r.key_ids)),
        ("entry kinds", ", ".join(f"{k} {n}" for k, n in r.kinds.items())),
        ("file SHA-256", r.sha256),
    ]
    for index, origin, previous, prev_size, restored, reason in r.epochs:
        rows.append(
            (
                "RESTORED (epoch)",
                f"entry {index}: the log was restored to {restored} entries and continues as {origin}; "
                f"{previous} had been cosigned up to {prev_size} by {r.peer}"
                + (f", so entries {restored}..{prev_size - 1} of it are lost" if prev_size > restored else "")
                + f". Reason: {reason}",
            )
        )
    for what, value in rows:
        table.add_row(what, escape(value))
    out.print(table)
    anchors = Table(
        title="trust anchors (from --trust)"
        if r.trusted_by_anchor_file
        else "trust anchors: COMPARE these fingerprints with the ones exchanged out of band"
    )
    for col in ("identity", "serial", "fingerprint"):
        anchors.add_column(col, no_wrap=col != "fingerprint", overflow="fold")
    for identity, serial, fp in r.anchors:
        anchors.add_row(identity, str(serial), fp)
    out.print(anchors)
    fps = Table(title="key bundle versions in the export (each later one follows from its anchor)")
    for col in ("owner", "serial", "fingerprint"):
        fps.add_column(col, no_wrap=col != "fingerprint", overflow="fold")
    for owner, serial, fp in r.fingerprints:
        fps.add_row(owner, str(serial), fp)
    out.print(fps)
    if not r.latest_cosigned:
        console().print(
            f"[bold yellow]--allow-uncosigned: the latest checkpoint is NOT cosigned by {escape(r.peer)}; "
            "nothing shows the peer saw this log.[/]"
        )
    if r.uncosigned_checkpoints:
        console().print(
            f"[yellow]{r.uncosigned_checkpoints} checkpoint(s) lack {escape(r.peer)}'s cosignature "
            "(use --require-cosigned to refuse them).[/]"
        )


# --- show ----------------------------------------------------------------------------------


def _since(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(f"--since {text!r} is not an ISO 8601 time", field="since") from e
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def _matches(args: argparse.Namespace, since: dt.datetime | None, e: AuditEntry) -> bool:
    if args.kind and e.kind != args.kind:
        return False
    if since is not None and e.at < since:
        return False
    return not args.message_id or args.message_id in (e.message_id, e.detail.get("ack_id"))


def run_show(args: argparse.Namespace) -> int:
    since = _since(args.since)
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1", field="limit")
    if args.bundle is not None:
        try:
            with args.bundle.open("rb") as f:
                rows = _select(args, since, _bundle_entries(f))
        except OSError as e:
            console().print(f"[red]Unreadable:[/] cannot read {escape(str(args.bundle))}: {escape(str(e.strerror))}")
            return EXIT_UNREADABLE
        source = f"bundle {args.bundle} (not verified: run `audit verify`)"
    else:
        if args.config is None:
            args.config = os.environ.get("CUSTOMS_GATEWAY_CONFIG", "gateway.toml")
        config = load_cli_config(args)
        if config.store.backend == "sqlite" and not config.path(config.store.path).exists():
            raise ConfigError(f"no store at {config.path(config.store.path)}", field="store.path")
        rows = asyncio.run(_store_rows(config, args, since))
        source = f"store of {config.identity}"
    _print_rows(rows, source, as_json=args.json)
    return 0


def _select(
    args: argparse.Namespace, since: dt.datetime | None, entries: Iterator[tuple[int, AuditEntry]]
) -> list[tuple[int, AuditEntry]]:
    rows: list[tuple[int, AuditEntry]] = []
    for index, entry in entries:
        if _matches(args, since, entry):
            rows.append((index, entry))
            if len(rows) >= args.limit:
                break
    return rows


def _bundle_entries(f: IO[bytes]) -> Iterator[tuple[int, AuditEntry]]:
    for n, raw in enumerate(f, 1):
        try:
            d = json_object(raw, field="line")
            if d.get("t") != "entry":
                continue
            yield int(d["index"]), AuditEntry.from_bytes(unb64url(d["entry"], field="entry"))
        except (GatewayError, KeyError, TypeError, ValueError) as e:
            raise GatewayError(f"line {n} of the bundle is not readable: {e}", code="audit.malformed") from e


async def _store_rows(
    config: Config, args: argparse.Namespace, since: dt.datetime | None
) -> list[tuple[int, AuditEntry]]:
    store = open_store(config)
    await store.open()
    try:
        size = await store.audit_size()
        rows: list[tuple[int, AuditEntry]] = []
        for start in range(0, size, 1000):
            chunk = await store.audit_entries(start, min(start + 1000, size))
            entries = ((i, AuditEntry.from_bytes(data)) for i, data in chunk)
            rows += _select(args, since, entries)[: args.limit - len(rows)]
            if len(rows) >= args.limit:
                break
        return rows
    finally:
        await store.close()


def _row_json(index: int, e: AuditEntry) -> dict[str, Any]:
    return {
        "index": index,
        "at": format_ts(e.at),
        "kind": e.kind,
        "message_id": e.message_id,
        "actor": e.actor,
        "peer": e.peer,
        "code": e.code,
        "digests": e.digests,
        "detail": e.detail,
    }


def _print_rows(rows: list[tuple[int, AuditEntry]], source: str, *, as_json: bool) -> None:
    if as_json:
        print_json([_row_json(i, e) for i, e in rows])
        return
    table = Table(title=escape(f"audit entries from {source}"))
    for col in ("index", "time (UTC)", "kind", "message id", "actor", "peer", "code"):
        table.add_column(col, no_wrap=col not in ("message id", "actor"), overflow="fold")
    for i, e in rows:
        table.add_row(
            str(i),
            format_ts(e.at),
            e.kind,
            escape(e.message_id or ""),
            escape(e.actor),
            escape(e.peer or ""),
            escape(e.code or ""),
        )
    result_console().print(table)
    if not rows:
        console().print("No entries match.")
