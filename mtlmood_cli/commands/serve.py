"""`mtlmood serve`: run the Serve endpoint in the foreground until Ctrl-C; `mtlmood serve build`:
write the Ray Serve config file that deploys it with `serve run` / `serve deploy`.

    mtlmood serve --study runs/demo/study                  # best checkpoint of a study
    mtlmood serve --checkpoint runs/train/best --port 8080
    mtlmood serve --checkpoint DIR --config serve.yaml --set ingress.max_replicas=4
    mtlmood serve build --study /mnt/shared/mtlmood/studies/alpha -o serve.yaml   # then: serve deploy serve.yaml

``--config`` takes a YAML of ServeConfig fields or a Serve config file that `serve build`
wrote (its ``args``; serve.config_file.load_serve_config). The application is serve's
(serve.app.build_app, serve.build); this module parses the arguments, starts Ray and
prints. Ray is imported inside the run functions only, so `mtlmood --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mtlmood.errors import ConfigError
from mtlmood.fileio import atomic_write_text
from mtlmood_cli.arguments import add_override_argument

if TYPE_CHECKING:
    from serve.config import ServeConfig


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the model comes from and the ServeConfig settings: shared by `serve` and `serve build`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", metavar="DIR", help="an mtlmood checkpoint directory (or an s3:// URI)")
    source.add_argument("--study", metavar="RUN", help="a study run directory or URI (serves its best_checkpoint.json)")
    parser.add_argument(
        "--cell",
        default=None,
        metavar="N|META",
        help="with --study: which cell's best model, e.g. '3|artist' (default: the study's "
        "default cell, see its best_checkpoint.json)",
    )
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML with ServeConfig fields (serve/config.py), or a Serve config file from `mtlmood serve build`",
    )
    add_override_argument(parser, "ingress.max_replicas=4")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` (with its `build` action) to the CLI."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a checkpoint (or a study's best) over HTTP with Ray Serve, until Ctrl-C",
        description="Start (or join) Ray, deploy the mood endpoint and block until Ctrl-C. "
        "Routes: POST /predict, GET /healthz, GET /model, GET /docs. "
        "`mtlmood serve build` writes the same application as a Ray Serve config file instead.",
    )
    _add_config_arguments(parser)
    parser.add_argument(
        "--address", default=None, help="Ray cluster to join ('auto' inside a cluster); default starts a local Ray"
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    # Ctrl-C once serving is handled in cmd_serve; before that, mtlmood_cli.main prints this.
    parser.set_defaults(func=cmd_serve, interrupted="stopped")

    actions = parser.add_subparsers(dest="serve_command", metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="write the Ray Serve config file (for serve run / serve deploy / KubeRay) of a ServeConfig",
        description="Write a Ray Serve config: http_options, one application whose builder "
        "(serve.app:build_app) gets the ServeConfig as args, and the deployments' autoscaling, "
        "queue and resource options derived from those args. --config FILE takes a file this "
        "command wrote and regenerates it from its args.",
    )
    _add_config_arguments(build)
    build.add_argument("--output", "-o", metavar="FILE", help="where to write it (default: standard output)")
    build.add_argument(
        "--rayservice",
        metavar="MANIFEST",
        help="also write it into this KubeRay RayService manifest's spec.serveConfigV2 (the rest kept as is)",
    )
    build.set_defaults(func=cmd_build, interrupted="stopped; nothing was written")


def _load_config(args: argparse.Namespace, check: bool = True) -> "ServeConfig":
    """Defaults <- --config <- --set <- --checkpoint/--study/--cell/--host/--port."""
    from serve.config_file import load_serve_config

    source = {}
    if args.checkpoint or args.study:  # a flag replaces whatever source the config file named
        source = {"checkpoint": args.checkpoint or "", "study": args.study or ""}
    if args.cell is not None:
        source["cell"] = args.cell
    return load_serve_config(args.config, args.overrides, check, host=args.host, port=args.port, **source)


def cmd_build(args: argparse.Namespace) -> int:
    """Write the Ray Serve config file (stdout, --output and/or a RayService manifest)."""
    from mtlmood import storage
    from serve.build import embed_in_rayservice, gpus_note, render, serve_deploy_config

    for name in ("checkpoint", "study"):  # made absolute here: `serve deploy` reads it in another directory
        value = getattr(args, name)
        if value and not storage.is_uri(value):
            setattr(args, name, str(Path(value).expanduser().absolute()))
    config = _load_config(args, check=False)
    document = serve_deploy_config(config)
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(document)  # what `serve run` / `serve deploy` check first
    note = gpus_note(config)
    if note:
        print(note, file=sys.stderr)
    text = render(document)
    if args.output:
        atomic_write_text(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    elif not args.rayservice:
        sys.stdout.write(text)
    if args.rayservice:
        manifest = Path(args.rayservice)
        try:
            before = manifest.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {manifest}: {exc.strerror or exc}") from None
        atomic_write_text(manifest, embed_in_rayservice(before, render(document, header=False)))
        print(f"wrote spec.serveConfigV2 of {manifest}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Deploy the endpoint on a local or joined Ray and block until Ctrl-C, then remove it."""
    from mtlmood import storage
    from serve.config import checkpoint_source, resolve_checkpoint

    config = _load_config(args)
    # Fail here, in one line, before Ray starts: a wrong path is the most common mistake (a URI is
    # downloaded here once; replicas on this node then find it in the cache).
    resolve_checkpoint(config)
    checkpoint = checkpoint_source(config)

    import ray
    from ray import serve

    from serve.app import build_app

    started_ray = not ray.is_initialized() and args.address is None
    if not ray.is_initialized():
        # The replicas of a joined cluster reach the same object store (endpoint, region; never keys).
        joined = args.address is not None and storage.is_uri(checkpoint) and storage.storage_env()
        runtime_env = {"env_vars": storage.storage_env()} if joined else None
        ray.init(
            address=args.address,
            num_cpus=args.num_cpus if args.address is None else None,
            runtime_env=runtime_env,
        )
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix)
    base = f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}"
    print(f"serving {checkpoint}")
    print(f"  predict: curl -H 'Content-Type: audio/mpeg' --data-binary @song.mp3 {base}/predict")
    print(f"  health:  {base}/healthz   model: {base}/model (card: {base}/model/card)   API docs: {base}/docs")
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
