"""`edgeloop release`: package and list signed releases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared.errors import EdgeloopError


def _cmd_release_create(args: argparse.Namespace) -> int:
    from host.fleet.release import ReleaseStore, create_release

    if args.sign_key is None and not args.unsigned:
        raise EdgeloopError("pass --sign-key KEY (make one with `edgeloop keys generate`) or --unsigned")
    m = create_release(
        Path(args.build_dir),
        args.name,
        args.version,
        ReleaseStore(args.store),
        sign_key=args.sign_key,
        include=args.include,
        source_top1=args.source_top1,
        notes=args.notes,
        reference_data=args.reference_data,
        valid_days=args.valid_days or None,
        speed_report=args.speed_report,
        min_speedup=args.min_speedup,
        ship_slower=args.ship_slower,
    )
    if args.json:
        print(m.model_dump_json(indent=2))
        return 0
    from host.table import print_table

    ref = m.model.reference
    if ref is not None:
        print(f"drift reference: {ref.source or str(ref.n_images) + ' images'}")
    print(f"runtimes: {', '.join(m.runtimes) if m.runtimes else 'any'}")
    for line in m.notes.splitlines():
        if line.startswith("ship rule"):
            print(line)
    print_table(
        f"release {m.ref} ({'signed, key ' + str(m.key_id) if m.signature else 'UNSIGNED'})",
        ["artifact", "precision", "runtime", "bytes", "golden top-1 %", "sha256"],
        [
            (
                a.name,
                a.precision,
                a.runtime,
                a.size,
                100 * a.golden_top1 if a.golden_top1 is not None else None,
                a.sha256[:16],
            )
            for a in m.artifacts
        ],
    )
    return 0


def _cmd_release_list(args: argparse.Namespace) -> int:
    from host.fleet.release import ReleaseStore
    from host.table import print_table

    ms = ReleaseStore(args.store).all()
    if args.json:  # a list, as `fleet status --json` and `rollout status --json` print
        print(json.dumps([m.model_dump(mode="json") for m in ms], indent=2))
        return 0
    print_table(
        "releases",
        ["release", "created", "artifacts", "source top-1 %", "signed"],
        [
            (
                str(m.ref),
                m.created_at.isoformat(timespec="seconds"),
                len(m.artifacts),
                100 * m.model.source_top1,
                "yes" if m.signature else "no",
            )
            for m in ms
        ],
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="package and list releases")
    rsub = p.add_subparsers(dest="release_command", required=True)
    c = rsub.add_parser("create", help="package the ONNX files of a build directory as a signed release")
    c.add_argument("build_dir")
    c.add_argument("--name", required=True)
    c.add_argument("--version", required=True, help="dot-separated integers, e.g. 1.2.0")
    c.add_argument("--sign-key", help="ed25519 private key (PEM)")
    c.add_argument("--unsigned", action="store_true", help="allow an unsigned release (devices refuse it by default)")
    c.add_argument("--store", default="releases", help="artifact store served by `edgeloop serve --releases`")
    c.add_argument("--include", nargs="+", help="only these ONNX files of the build directory")
    c.add_argument("--source-top1", type=float, help="source-model top-1 (0..1) if no model card says it")
    c.add_argument(
        "--valid-days",
        type=float,
        default=365.0,
        help="devices refuse the release this many days after it is made (its signed not_after; 0: never)",
    )
    c.add_argument(
        "--reference-data",
        metavar="DIR",
        help="held-out labelled images (ImageFolder, or archive.tar.gz::subdir) to measure the drift reference on "
        "(default: the FP32 file's stored reference, else the golden images)",
    )
    c.add_argument(
        "--speed-report",
        metavar="JSON",
        help="`edgeloop report --json-out` of this build: the release ships only to the runtimes where its INT8 file "
        "was measured faster than the unpruned INT8 (refused if none)",
    )
    c.add_argument(
        "--min-speedup",
        type=float,
        default=1.0,
        help="with --speed-report: the speed-up over the unpruned INT8 a runtime needs (default 1.0: any gain)",
    )
    c.add_argument("--ship-slower", action="store_true", help="skip the ship rule: any runtime, measured or not")
    c.add_argument("--notes", default="")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=_cmd_release_create)
    ls = rsub.add_parser("list", help="list releases in a store")
    ls.add_argument("--store", default="releases")
    ls.add_argument("--json", action="store_true", help="print every manifest as one JSON list")
    ls.set_defaults(handler=_cmd_release_list)
