"""`univ`: one command line for training, evaluation, export and bag tools.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args)``;
modules are imported only when their subcommand runs, so ``univ --help`` stays fast and never
imports torch or rclpy.
"""

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    'weights': ('univ_core.models.weights', 'cache the default teacher; convert a UNIV release'),
    'pretrain': ('univ_core.train.pretrain', 'PCCL pre-training with LoRA (dual-knowledge)'),
    'eval-alignment': ('univ_core.eval.alignment', 'label-free IR->RGB patch alignment metrics'),
    'finetune': ('univ_core.train.finetune', 'train a segmentation or detection head'),
    'eval': ('univ_core.eval.downstream', 'mIoU / mAP per modality and cross-modal transfer'),
    'autolabel': ('univ_core.autolabel.run', 'label aligned pairs or bags with ONNX teachers'),
    'train-default': ('univ_core.train.default_model', 'rebuild and measure the default model'),
    'export': ('univ_core.export.cli', 'merge LoRA and export safetensors or ONNX'),
    'bag-from-pairs': ('univ_ros.replay.bag_from_pairs', 'write an RGB-T dataset as a rosbag2'),
    'replay': ('univ_ros.replay.cli', 'replay a bag through the Predictor or the node'),
    'demo': ('univ_ros.replay.demo', 'bag from aligned pairs -> offline replay -> report'),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (subcommand names and one-line helps only)."""
    parser = argparse.ArgumentParser(prog='univ', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def parse(argv: list[str]) -> tuple[object, argparse.Namespace]:
    """(subcommand module, parsed arguments) of ``univ COMMAND ...``; exits on a usage error."""
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f'univ {name}', description=COMMANDS[name][1])
    module.add_arguments(parser)
    # Intermixed: key=value overrides may come before or after the flags.
    return module, parser.parse_intermixed_args(rest)


def main(argv: list[str] | None = None) -> int:
    """Run ``univ COMMAND ...``; input errors print one line and return 1."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv or ['--help'])
        return 2
    name = argv[0]
    module, args = parse(argv)
    try:
        return int(module.main(args) or 0)
    except (FileNotFoundError, ValueError) as err:
        # Input errors: one clear line, no traceback (set UNIV_DEBUG=1 for the traceback).
        import os

        if os.environ.get('UNIV_DEBUG'):
            raise
        print(f'univ {name}: error: {err}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
