"""`mtlmood serve`: run the Serve endpoint in the foreground until Ctrl-C.

    mtlmood serve --study runs/demo/study                  # best checkpoint of a study
    mtlmood serve --checkpoint runs/train/best --port 8080
    mtlmood serve --checkpoint DIR --config serve.yaml --set ingress.max_replicas=4

For a long-lived deployment on a cluster use ``serve deploy serve/serve_config.yaml``.
Ray is imported inside the run function only, so `mtlmood --help` stays fast.
"""

from __future__ import annotations

import argparse
import time
from typing import Optional

from mtlmood.commands.common import add_override_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a checkpoint (or a study's best) over HTTP with Ray Serve, until Ctrl-C",
        description="Start (or join) Ray, deploy the mood endpoint and block until Ctrl-C. "
        "Routes: POST /predict, GET /healthz, GET /model, GET /docs.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", metavar="DIR", help="an mtlmood checkpoint directory")
    source.add_argument("--study", metavar="RUN", help="a study run directory (serves its best_checkpoint.json)")
    parser.add_argument(
        "--cell",
        default=None,
        metavar="N|META",
        help="with --study: which cell's best model, e.g. '3|artist' (default: the study's "
        "default cell, see its best_checkpoint.json)",
    )
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML with ServeConfig fields (serve/config.py)")
    add_override_argument(parser, "ingress.max_replicas=4")
    parser.add_argument(
        "--address", default=None, help="Ray cluster to join ('auto' inside a cluster); default starts a local Ray"
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    # Ctrl-C once serving is handled in cmd_serve; before that, mtlmood_cli.main prints this.
    parser.set_defaults(func=cmd_serve, interrupted="stopped")


def cmd_serve(args: argparse.Namespace) -> int:
    from serve.config import load_serve_config, resolve_checkpoint

    source = {}
    if args.checkpoint or args.study:  # a flag replaces whatever source the config file named
        source = {"checkpoint": args.checkpoint or "", "study": args.study or ""}
    if args.cell is not None:
        source["cell"] = args.cell
    config = load_serve_config(args.config, args.overrides, host=args.host, port=args.port, **source)
    # Fail here, in one line, before Ray starts: a wrong path is the most common mistake.
    checkpoint = resolve_checkpoint(config)

    import ray
    from ray import serve

    from serve.app import build_app

    started_ray = not ray.is_initialized() and args.address is None
    if not ray.is_initialized():
        ray.init(address=args.address, num_cpus=args.num_cpus if args.address is None else None)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
    base = f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}"
    print(f"serving {checkpoint}")
    print(f"  predict: curl -H 'Content-Type: audio/mpeg' --data-binary @song.mp3 {base}/predict")
    print(f"  health:  {base}/healthz   model card: {base}/model   API docs: {base}/docs")
    print("Ctrl-C stops the endpoint.", flush=True)
    try:
        _block()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        # The endpoint lives as long as this command: remove it from a joined cluster too.
        serve.delete(config.app_name)
        if started_ray:
            serve.shutdown()
            ray.shutdown()
    return 0


def _block(poll_s: float = 1.0, until: Optional[float] = None) -> None:
    """Sleep until Ctrl-C (or ``until``, a time.monotonic() deadline, for tests)."""
    while until is None or time.monotonic() < until:
        time.sleep(poll_s)
