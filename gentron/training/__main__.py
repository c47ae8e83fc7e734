"""``python -m gentron.training --config configs/NAME.yaml [--steps N] [--output-dir D] [--set key=value ...]``

Multi-process: ``accelerate launch --config_file configs/accelerate_ddp.yaml -m gentron.training --config ...``.
Prints the final pipeline folder on success; configuration errors exit with status 2 and the fix.
"""
from __future__ import annotations

import argparse
import os
import sys

import yaml


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gentron.training", description="Train a GenTron stage.")
    parser.add_argument("--config", required=True, help="a stage config, e.g. configs/tiny_t2i.yaml")
    parser.add_argument("--steps", type=int, help="override the total number of optimizer steps")
    parser.add_argument("--output-dir", help="override output_dir (checkpoints, logs and final/ go here)")
    parser.add_argument("--init-from", help="override init_from (a pipeline folder or random:PRESET)")
    parser.add_argument("--data", help="override data ('shapes' or a folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field; VALUE is read as YAML (e.g. --set lr=3e-4)")
    return parser


def parse_value(text: str) -> object:
    """A ``--set`` value read as YAML, except that "3e-4" is a number (YAML 1.1 wants "3.0e-4") and only true and
    false are booleans."""
    value = yaml.safe_load(text)
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text.strip()  # YAML 1.1 reads no/yes/on/off as booleans: "mixed_precision=no" means the word
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {"steps": args.steps, "output_dir": args.output_dir, "init_from": args.init_from, "data": args.data}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = parse_value(value)

    from ..quantization import backends_held_back

    # training quantizes nothing: diffusers and transformers (imported by the config's checks) need not import and
    # probe the quantization back ends
    with backends_held_back(()):
        from .config import TrainConfig

        try:
            cfg = TrainConfig.from_yaml(args.config, **overrides)
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
        from .trainer import train  # heavy imports only once the config is known to be good

    final = train(cfg)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per process
        print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
