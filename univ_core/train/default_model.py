"""`univ train-default`: rebuild the shipped default model and measure it.

    univ train-default --config config/default_model.yaml          # ~1 h on a 2-core CPU

1. ``univ autolabel`` over the shared data (roadscene, llvip, msrs_mini): the RGB teachers'
   boxes and masks for both modalities; real boxes (MSRS-detection, LLVIP) win.
2. ``univ finetune det+seg`` head-only on the configured backbone (``univ``: teacher + shipped
   adapter; ``default``: the teacher), both modalities, every pair except the evaluation pairs,
   cached augmented views.
3. :func:`univ_core.eval.benchmark.benchmark` on the evaluation pairs.
4. The compact model file (fp16 heads [+ LoRA delta]) and a sidecar JSON (command, data,
   teachers, commit, settings, measured metrics, sha256) into ``--out``.

Every intermediate folder is named by a hash of everything that determines it (settings, data
folders' pair lists, teacher and adapter sha256, the labelling code), so a rerun reuses only
what is still valid and a change anywhere retrains: a cached model is never silently stale.
"""

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from univ_core.autolabel.config import AutolabelConfig
from univ_core.data.home import REPO, config_file, data_home
from univ_core.models.model_file import DEFAULT_MODEL
from univ_core.models.univ_weights import UNIV_ADAPTER
from univ_core.models.weights import file_sha256
from univ_core.train.config import load_config, to_dict
from univ_core.train.downstream_data import Split
from univ_core.train.finetune import FinetuneConfig


@dataclass
class DefaultModelConfig:
    """Everything that determines the default model."""

    inputs: list[str] = field(default_factory=lambda: ['roadscene', 'llvip', 'msrs_mini'])
    autolabel: AutolabelConfig = field(default_factory=AutolabelConfig)
    # the shipped settings (epochs, views, class balance...) live in config/default_model.yaml
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        task='det+seg', backbone='univ'))
    work_dir: str = 'runs/default_model'  # autolabel/ and finetune/ folders (hash-named)

    def __post_init__(self) -> None:
        if isinstance(self.autolabel, dict):
            self.autolabel = AutolabelConfig(**self.autolabel)
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig(**self.finetune)


def _key(*parts: object) -> str:
    """A short hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_commit() -> str:
    """The repository's HEAD commit (+ '-dirty' with uncommitted changes), or 'unknown'."""
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return head + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


# the code that turns teachers' outputs into labels: a change there makes new labels (e.g. how the
# RGB and thermal teachers' boxes are merged), so it is part of the labels' key
LABEL_CODE = (*sorted((REPO / 'univ_core' / 'autolabel').glob('*.py')),
              REPO / 'univ_core' / 'inference' / 'box_fusion.py')


def label_code_sha256() -> dict[str, str]:
    """The sha256 of each :data:`LABEL_CODE` file, by file name."""
    return {path.name: file_sha256(path) for path in LABEL_CODE}


def labels_key(cfg: AutolabelConfig, listing: dict[str, list[str]]) -> str:
    """The labels folder's key: what decides the labels, the pair listing, the labelling code.

    What decides the labels is :meth:`AutolabelConfig.label_identity` (settings, teachers, the
    class table's content).
    """
    return _key(cfg.label_identity(), listing, label_code_sha256())


def autolabel_all(cfg: DefaultModelConfig, data: Path, quiet: bool) -> Path:
    """Step 1; returns the labels folder (reused when its key matches)."""
    from univ_core.autolabel.run import autolabel_input, load_labeller
    from univ_core.data.paired import find_pairs

    listing = {name: [p.name for p in find_pairs(data / name)] for name in cfg.inputs}
    out = Path(cfg.work_dir) / f'autolabel-{labels_key(cfg.autolabel, listing)}'
    if all((out / name / 'provenance.json').is_file() for name in cfg.inputs):
        return out
    labeller = load_labeller(cfg.autolabel)
    for name in cfg.inputs:
        if not (out / name / 'provenance.json').is_file():
            autolabel_input(str(data / name), out / name, labeller, force=True,
                            progress=not quiet)
    return out


def train(cfg: DefaultModelConfig, labels: Path, quiet: bool) -> Path:
    """Step 2; returns the trained model file (reused when its key matches)."""
    from univ_core.train.finetune import finetune

    ft = cfg.finetune
    adapter = file_sha256(UNIV_ADAPTER) if ft.backbone == 'univ' else ft.backbone
    key = _key(to_dict(ft), labels.name, adapter)
    ft.data = Split(str(labels), 'autolabel', exclude_evaluation_pairs=True)
    ft.out_dir = str(Path(cfg.work_dir) / f'finetune-{key}')
    done = Path(ft.out_dir) / 'model.safetensors'
    if done.is_file() and (Path(ft.out_dir) / 'summary.json').is_file():
        return done
    return finetune(ft, resume=True, quiet=quiet)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``univ train-default``."""
    parser.add_argument('--config', type=Path, default=config_file('default_model.yaml'))
    parser.add_argument('--out', type=Path, default=DEFAULT_MODEL,
                        help='model file to write (its sidecar: same name, .json)')
    parser.add_argument('--quiet', action='store_true')
    parser.add_argument('overrides', nargs='*', help='key=value, e.g. finetune.epochs=2')


def main(args: argparse.Namespace) -> int:
    """Entry point of ``univ train-default``."""
    from univ_core.eval.benchmark import benchmark, headline
    from univ_core.inference import PredictorConfig, load_predictor
    from univ_core.train.checkpoint import write_json

    cfg = load_config(DefaultModelConfig, args.config, args.overrides)
    default = FinetuneConfig()
    if (cfg.finetune.data, cfg.finetune.out_dir) != (default.data, default.out_dir):
        raise ValueError('finetune.data / finetune.out_dir: train-default sets them itself (the '
                         'labels of `inputs`, work_dir/finetune-<hash>); give inputs= or '
                         'work_dir= instead')
    commit = git_commit()  # before --out (a tracked file) is rewritten and dirties the tree
    data = data_home()
    labels = autolabel_all(cfg, data, args.quiet)
    trained = train(cfg, labels, args.quiet)
    # fp32: the sidecar's numbers are then the same on every CPU ('auto' may pick bf16 / int8)
    predictor = load_predictor(PredictorConfig(model=str(trained), device='cpu', precision='fp32'))
    results = benchmark(predictor, data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + '.tmp')
    shutil.copyfile(trained, tmp)
    tmp.replace(args.out)
    provenance = [json.loads((labels / n / 'provenance.json').read_text()) for n in cfg.inputs]
    write_json(args.out.with_suffix('.json'), {
        'file': args.out.name, 'sha256': file_sha256(args.out),
        'command': 'univ ' + ' '.join(sys.argv[1:]), 'commit': commit,
        'config': to_dict(cfg), 'data': {n: str(data / n) for n in cfg.inputs},
        'teachers': provenance[0]['teachers'],
        'labels': {n: {k: p[k] for k in ('pairs', 'night_pairs', 'real_label_pairs',
                                          'counts', 'teacher_quality_vs_real')}
                   for n, p in zip(cfg.inputs, provenance, strict=True)},
        'backbone_adapter_sha256': (file_sha256(UNIV_ADAPTER) if cfg.finetune.backbone == 'univ'
                                    else None),
        'metrics': headline(results), 'benchmark': results,
    })
    for name, value in headline(results).items():
        print(f'{name:>28}: {value:.3f}')
    print(f'train-default: {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)')
    return 0
