"""`python -m training` / `convserve-train`: digits | train | export."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from training.errors import TrainingError


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")


def _digits(args) -> None:
    from training.digits import write_digits

    counts = write_digits(args.out_dir, args.size)
    print(f"wrote {sum(counts.values())} images of {len(counts)} classes to {args.out_dir}")


def _train(args) -> None:
    from training.cli import DATA_KEYS, TRAINING_KEYS, overrides
    from training.config import load_config, with_overrides
    from training.pipeline import TrainRequest, run_train
    from training.spec import parse_layer_flag

    config = with_overrides(
        load_config(args.config), overrides(args, DATA_KEYS), overrides(args, TRAINING_KEYS)
    )
    if args.layer:
        from dataclasses import replace

        config = replace(config, layers=[parse_layer_flag(text) for text in args.layer])
    bundle, path = run_train(
        TrainRequest(
            args.data_dir,
            args.out,
            args.name,
            args.version,
            config,
            args.validation_dir,
            args.save_keras,
        )
    )
    _report(bundle, path, "held-out accuracy")


def _export(args) -> None:
    from training.exporter import ExportRequest, run_export

    bundle, path = run_export(ExportRequest.from_args(args))
    _report(bundle, path, "accuracy on --data")


def _report(bundle, path, label: str) -> None:
    size = sum(p.stat().st_size for p in path.iterdir())
    accuracy = bundle.metrics.val_accuracy
    print(
        f"wrote {path} ({size / 1e6:.2f} MB): classes {len(bundle.classes)}, "
        f"{label} {'n/a' if accuracy is None else f'{accuracy:.4f}'}, "
        f"parity {bundle.parity:.2e}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input -> message on stderr and exit status 2, no traceback."""
    from training.cli import build_parser

    _quiet_tensorflow()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0)
    handlers = {"digits": _digits, "train": _train, "export": _export}
    try:
        handlers[args.command](args)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (full disk, permissions, ...)
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
