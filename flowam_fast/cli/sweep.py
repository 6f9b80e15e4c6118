"""`flowam-fast sweep SPEC --out DIR`: a (model x method x class x seed) sweep from a TOML spec,
here or on a Ray cluster, resumable (flowam_fast.sweep)."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("spec", help="sweep spec (TOML; see docs/design.md, section Sweeps)")
    p.add_argument("--out", required=True, help="output directory: <model>/<method>.h5, shards/, sweep.json")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: shards one after another here; ray: one Ray task per shard")
    p.add_argument("--address", help="Ray cluster address, e.g. HEAD:6379 (default: start a local Ray)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (on Ray: one GPU per task)")
    p.add_argument("--max-retries", type=int, default=3, help="Ray: retries of a shard whose worker died")
    p.add_argument("--fresh", action="store_true", help="discard an earlier sweep in --out and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..sweep import run_sweep

    s = run_sweep(args.spec, args.out, executor=args.executor, address=args.address, device=args.device,
                  fresh=args.fresh, quiet=args.quiet, max_retries=args.max_retries)
    print(f"{s['jobs']} jobs in {s['shards']} shards ({s['reused']} reused, {s['ran']} run) in {s['seconds']:.1f} s; "
          f"success {s['success']:.1%}; stores: {', '.join(s['stores'].values())}")
    return 0
