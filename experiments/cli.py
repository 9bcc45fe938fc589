"""Command line: `medtransfer run --config <yaml> [key=value ...]` (same as `python -m experiments`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .stopping import StopSignals, exit_at_once

EPILOG = """\
overrides are OmegaConf dotlist entries, for example:
  medtransfer run --config experiments/configs/demo.yaml train.max_epochs=2 data.num_patients=200
  medtransfer run --config experiments/configs/demo.yaml 'attacks=[{name: fgsm, eps: [0.004, 0.008]}]'
results go to the MLflow store given by tracking.uri, else $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db;
`medtransfer ui` shows them in the MLflow UI
"""


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    from .design.locations import CONFIG_DIR
    from .reader_study.command import add_parser as add_readers_parser

    parser = argparse.ArgumentParser(
        prog="medtransfer",
        description="Measure how adversarial attacks crafted on surrogate medical-image classifiers "
                    "transfer to target classifiers; every pair is logged to MLflow.")
    presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    preset_dir = CONFIG_DIR.relative_to(CONFIG_DIR.parent.parent)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run a study from a YAML config", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the study's model zoo, craft each adversarial set once on its surrogate, "
                    "evaluate every target on clean, adversarial and control-noise images, log to MLflow "
                    "and print the result table.")
    commands.add_parser("models", help="list the registered architectures",
                        description="List the architectures a zoo entry's `arch` can name.")
    plan = commands.add_parser(
        "plan", help="show what a study would do, and every problem, without doing it",
        description="Print the models to train, sets to craft and pairs to evaluate (and how many are "
                    "already done), each domain's data, an estimate of compute and wall time measured "
                    "on this machine, and every problem found. Writes nothing.")
    weights = commands.add_parser(
        "weights", help="list, check or install the ImageNet weight files a study needs",
        description="List the ImageNet weight files the config's `imagenet` models need, where each "
                    "goes and whether it is present and intact (sha256 against the hash in "
                    "torchvision's file name). With --from DIR, copy the files found in DIR into "
                    "place after checking them (without --config: every torchvision file found).")
    weights.add_argument("--from", dest="source", metavar="DIR", help="folder holding downloaded files")
    for command in (run, plan, weights):
        command.add_argument("--config", required=command is not weights, metavar="YAML",
                             help=f"study config file or preset name (presets: {presets} in {preset_dir}/)")
        if command is run:
            command.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                                 help="run only shard I of N (0-based) of the study's craft units; shards may run "
                                      "at once against one tracking store; a final run without --shard assembles "
                                      "the tables")
        command.add_argument("overrides", nargs="*", metavar="key=value",
                             help="OmegaConf dotlist overrides applied on top of the config file")
    ui = commands.add_parser(
        "ui", help="start the MLflow UI on the tracking store and print the link to the runs",
        description="Serve the MLflow UI for the project's store (./mlruns/mlflow.db), or the one "
                    "tracking.uri=... or $MLFLOW_TRACKING_URI names, on 127.0.0.1, and print a link that "
                    "opens on the newest study's runs. Ctrl-C stops it. For an http(s) tracking server "
                    "only the link is printed.")
    ui.add_argument("--port", type=int, default=None,
                    help="local port (default: 5000 if free, else any free port)")
    ui.add_argument("store", nargs="?", metavar="tracking.uri=URI", type=parse_store,
                    help="the tracking store to show (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)")
    add_readers_parser(commands)
    return parser


def parse_store(text: str) -> str:
    key, sep, uri = text.partition("=")
    if key != "tracking.uri" or not sep or not uri:
        raise argparse.ArgumentTypeError(f"{text!r}: expected tracking.uri=URI")
    return uri


def main(argv: list[str] | None = None) -> int:
    """The command line; a Ctrl-C (exit 130) or SIGTERM (exit 143) at any moment, start-up included,
    is one line: the study's open runs end KILLED, finished work is kept."""
    with StopSignals() as stop:  # installed first, so no signal meets the default handler in between
        try:
            with exit_at_once():
                args = build_parser().parse_args(argv)
                if args.command != "models":
                    import medcommon.console  # noqa: F401
                    from . import study  # noqa: F401 (torch, Lightning, MLflow)
            return command(args)
        except KeyboardInterrupt:
            print(stop.line(), file=sys.stderr)
            return stop.exit_status()


def command(args: argparse.Namespace) -> int:
    if args.command == "models":
        from lightning_modules import architecture_listing
        print(architecture_listing())
        return 0
    from medcommon.console import quiet_third_party

    with quiet_third_party():
        return quiet_command(args)


def quiet_command(args: argparse.Namespace) -> int:
    """A command other than `models`, with third-party info-level output off."""
    from .design.config import ConfigError
    from .design.locations import default_tracking_uri
    from .store.tracking import check_tracking_uri

    if args.command == "ui":
        from .store.ui import serve
        uri = args.store or default_tracking_uri()
        try:
            check_tracking_uri(uri)
            return serve(uri, args.port)
        except (ValueError, FileNotFoundError) as err:
            print(f"medtransfer ui: error: {err}", file=sys.stderr)
            return 2
        except RuntimeError as err:
            print(f"medtransfer ui: error: {err}", file=sys.stderr)
            return 1
    if args.command == "readers":
        from .reader_study.command import readers_command
        return readers_command(args)
    from .design.config import load_config
    from .design.external import ExternalError
    from .store.tracking import ui_hint
    from .study import format_table, plan_study, run_study
    from medcommon.write_errors import WriteFailed

    try:
        if args.command == "weights":
            return weights_command(args)
        cfg = load_config(args.config, args.overrides)
        if args.command == "plan":
            plan = plan_study(cfg)
            print(plan.text)
            return 2 if plan.problems else 0
        result = run_study(cfg, shard=args.shard)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        for line in str(err).splitlines():  # several problems found up front: one line each
            print(f"medtransfer: error: {line}", file=sys.stderr)
        return 2
    except (WriteFailed, ExternalError) as err:  # a full disk or a read-only folder, an endpoint, met while working
        print(f"medtransfer: error: {err}", file=sys.stderr)
        return 1
    print()
    print(result.summary or format_table(result.table))
    for domain, folder in result.reports.items():
        print(f"Report (tables, plots, examples){f' ({domain})' if len(result.reports) > 1 else ''}: {folder}")
    print(ui_hint(result.tracking_uri, bool(cfg.tracking.uri), result.links))
    return 0


def weights_command(args) -> int:
    """`medtransfer weights`: list (and with --from, install) the ImageNet files; 2 if any is unusable."""
    from .design.config import ConfigError, load_config
    from .preflight.weights import all_torchvision_files, install_from, listing, needed_files

    if args.config is None and args.source is None:
        raise ConfigError("weights: give --config YAML, --from DIR or both")
    files, problems = needed_files(load_config(args.config, args.overrides)) if args.config else (
        all_torchvision_files(), [])
    if args.source is not None:
        print("\n".join(install_from(Path(args.source), files)))
        if args.config is None:
            return 0
    print(listing(files))
    unusable = [f for f in files if f.problem()]
    for line in problems:
        print(f"medtransfer: error: {line}", file=sys.stderr)
    if unusable:
        print(f"medtransfer: error: {len(unusable)} of {len(files)} ImageNet weight files missing or corrupt: "
              f"{', '.join(f.name for f in unusable)}", file=sys.stderr)
    return 2 if problems or unusable else 0


if __name__ == "__main__":
    sys.exit(main())
