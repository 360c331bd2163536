"""`customs-gateway recover`: after a restore from backup, level the store with the peer.

Asks the running gateway (admin token) to recover: it fetches the peer's signed account of what it
has seen of us, marks as delivered (with the peer's original receipts) what the peer already
holds, lists what the peer holds that this store lost, and continues our sequence numbers past the
peer's. See docs/operations.md, "Restoring from a backup".
"""

from __future__ import annotations

import argparse

from .common import add_config_arg, print_json, result_console


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "recover",
        help="after a restore from backup: level this gateway with what its peer has seen (running gateway)",
    )
    add_config_arg(p)
    p.add_argument("--reason", required=True, help="why the store was restored (kept in the audit log)")
    p.add_argument("--url", help="local API base URL (default: from the config)")
    p.add_argument("--token-file", help="file with an admin bearer token (default: $CUSTOMS_GATEWAY_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run_recover)


def run_recover(args: argparse.Namespace) -> int:
    from .client_cmd import admin_post

    res = admin_post(args, "/v1/admin/recover", {"reason": args.reason})
    if res is None:
        return 3
    if args.json:
        print_json(res)
        return 0
    out = result_console()
    out.print(f"Recovered against {res['peer']}: sequence numbers continue at {res['next_seq']}.")
    for why in res["behind"]:
        out.print(f"  behind: {why}", soft_wrap=True)
    out.print(f"Marked delivered with the peer's original receipts: {len(res['marked_delivered'])}")
    out.print(f"Queued messages renumbered: {res['renumbered']}")
    lost = res["lost"]
    out.print(f"Messages the peer holds that this store lost: {len(lost)}")
    for m in lost:
        out.print(f"  lost {m['id']} (seq {m['seq']})", soft_wrap=True)
    return 0
