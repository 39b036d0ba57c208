"""Mapping thermal outputs into the RGB camera frame with a homography (non-aligned rigs)."""

import numpy as np
import torch
import torch.nn.functional as F


def as_homography(values: object) -> np.ndarray:
    """A 3x3 float64 matrix from 9 numbers (row-major) or a 3x3 nested list."""
    h = np.asarray(values, dtype=np.float64).reshape(-1)
    if h.size != 9 or not np.isfinite(h).all() or abs(np.linalg.det(h.reshape(3, 3))) < 1e-12:
        raise ValueError(
            f'homography: expected 9 finite numbers of an invertible 3x3 matrix, got {values}')
    return h.reshape(3, 3)


def transform_boxes(boxes: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Boxes mapped through homography ``h``: the axis-aligned hull of the 4 warped corners.

    Args:
        boxes: (K, 4) float32 xyxy in source pixels.
        h: (3, 3) float32, source pixel -> destination pixel.

    Returns:
        (K, 4) float32 xyxy in destination pixels.
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    corners = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                           torch.stack([x0, y1], -1), torch.stack([x1, y1], -1)], 1)  # (K,4,2)
    ones = torch.ones_like(corners[..., :1])
    warped = torch.cat([corners, ones], -1) @ h.T  # (K, 4, 3)
    xy = warped[..., :2] / warped[..., 2:].clamp_min(1e-9)  # (K, 4, 2)
    return torch.cat([xy.min(1).values, xy.max(1).values], -1)  # (K, 4)


def warp_grid(h_dst_to_src: np.ndarray, dst_hw: tuple[int, int], src_hw: tuple[int, int],
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A grid_sample grid that pulls source pixels into the destination frame.

    Args:
        h_dst_to_src: (3, 3) destination pixel -> source pixel.
        dst_hw: destination (H, W).
        src_hw: source (H, W).
        device: where the grid is made.

    Returns:
        grid (1, H, W, 2) in [-1, 1] source coordinates and valid (1, 1, H, W) bool (inside
        the source image).
    """
    hd, wd = dst_hw
    ys, xs = np.mgrid[0:hd, 0:wd].astype(np.float64) + 0.5  # pixel centres, (H, W) each
    pts = np.stack([xs, ys, np.ones_like(xs)], -1) @ h_dst_to_src.T  # (H, W, 3)
    sx, sy = pts[..., 0] / pts[..., 2], pts[..., 1] / pts[..., 2]
    hs, ws = src_hw
    grid = np.stack([sx / ws * 2 - 1, sy / hs * 2 - 1], -1)[None]  # (1, H, W, 2)
    valid = (np.abs(grid) <= 1).all(-1)[:, None]  # (1, 1, H, W)
    return (torch.as_tensor(grid, dtype=torch.float32, device=device),
            torch.as_tensor(valid, device=device))


def warp(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Args: maps (B, C, Hs, Ws); grid (1, H, W, 2). Returns (B, C, H, W) bilinear samples."""
    return F.grid_sample(maps, grid.expand(maps.shape[0], -1, -1, -1), align_corners=False)
