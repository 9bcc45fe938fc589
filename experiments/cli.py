"""Command line: `medtransfer run --config <yaml> [key=value ...]` (same as `python -m experiments`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import CONFIG_DIR, ConfigError

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
    parser = argparse.ArgumentParser(
        prog="medtransfer",
        description="Measure how adversarial attacks crafted on surrogate medical-image classifiers "
                    "transfer to target classifiers; every pair is logged to MLflow.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run a study from a YAML config", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the study's model zoo, craft each adversarial set once on its surrogate, "
                    "evaluate every target on clean, adversarial and control-noise images, log to MLflow "
                    "and print the result table.")
    commands.add_parser("models", help="list the registered architectures",
                        description="List the architectures a zoo entry's `arch` can name.")
    run.add_argument("--config", required=True, metavar="YAML",
                     help=f"study config file (presets: {', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))} "
                          f"in {CONFIG_DIR.relative_to(CONFIG_DIR.parent.parent)}/)")
    run.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                     help="run only shard I of N (0-based) of the study's craft units; shards may run at once "
                          "against one tracking store; a final run without --shard assembles the tables")
    run.add_argument("overrides", nargs="*", metavar="key=value",
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
    return parser


def parse_store(text: str) -> str:
    key, sep, uri = text.partition("=")
    if key != "tracking.uri" or not sep or not uri:
        raise argparse.ArgumentTypeError(f"{text!r}: expected tracking.uri=URI")
    return uri


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":
        from lightning_modules import architecture_listing
        print(architecture_listing())
        return 0
    from .console import quiet_third_party
    from .tracking import check_tracking_uri, default_tracking_uri

    quiet_third_party()
    if args.command == "ui":
        from .ui import serve
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
    from .config import load_config
    from .study import format_table, run_study

    try:
        cfg = load_config(args.config, args.overrides)
        table = run_study(cfg, shard=args.shard)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"medtransfer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medtransfer: interrupted; finished work is kept, run the same command again to resume",
              file=sys.stderr)
        return 130
    print()
    print(table.attrs.get("summary") or format_table(table))
    if "summary" in table.attrs:
        print(f"Report (tables, plots, examples): {Path(cfg.output_dir) / cfg.name / 'report'}")
    print(table.attrs["ui"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
