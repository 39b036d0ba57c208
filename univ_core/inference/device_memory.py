"""Device memory held by inference: what is allocated, and handing cached blocks back.

Used when a model is unloaded (the lifecycle node's deactivate): drop every reference to the
Predictor, then :func:`release_cached` so the CUDA caching allocator returns the freed blocks
to the driver (other processes can then use them); :func:`allocated_mb` tells what is left.
"""

import torch


def allocated_mb(device: str | torch.device) -> float:
    """MB of tensors allocated on ``device`` by this process (0.0 for the CPU)."""
    device = torch.device(device)
    if device.type != 'cuda' or not torch.cuda.is_available():
        return 0.0
    return torch.cuda.memory_allocated(device) / 2**20


def release_cached(device: str | torch.device) -> None:
    """Return the CUDA allocator's cached, unused blocks of ``device`` to the driver."""
    device = torch.device(device)
    if device.type == 'cuda' and torch.cuda.is_available():
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
