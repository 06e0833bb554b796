"""`magicmask keys generate DIR [--agents N] [--name NAME] [--force]`: the CURVE key pairs of a deployment
(docs/DEPLOY.md). The command line only; the key files and their rules are protocol/security.py's."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magicmask.protocol.security import PRIVATE, PUBLIC, default_names, generate_keys


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `keys` subcommand's own actions (today only `generate`)."""
    sub = p.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="make key pairs for the broker, the learner and every actor",
                       description="Writes DIR/public_keys/NAME.key (the allow-list; public) and "
                                   "DIR/private_keys/NAME.key_secret (each process's key pair; keep private). "
                                   "Existing pairs are kept unless --force. Then run with --set security.keys_dir=DIR.")
    g.add_argument("dir", metavar="DIR", help="keys folder (created if absent)")
    g.add_argument("--agents", type=int, default=4, help="actor key pairs actor-0..actor-(N-1) (default 4)")
    g.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="an extra client key pair NAME (repeatable), e.g. for a monitoring tool")
    g.add_argument("--force", action="store_true",
                   help="replace existing key pairs (every peer then needs the new files)")


def main(args: argparse.Namespace) -> int:
    """Make the key pairs; 2 with a message on a bad argument or an unwritable folder."""
    if args.agents < 0:
        print("magicmask keys: --agents must be >= 0", file=sys.stderr)
        return 2
    try:
        made = generate_keys(args.dir, [*default_names(args.agents), *args.name], force=args.force)
    except (ValueError, OSError) as e:
        print(f"magicmask keys: {e}", file=sys.stderr)
        return 2
    d = Path(args.dir)
    print(f"{len(made)} key pairs in {d}: public keys (allow-list) in {d / PUBLIC}, "
          f"key pairs in {d / PRIVATE} (keep private; give each host only its own).")
    print(f"use them with: --set security.keys_dir={d}")
    return 0
