"""CUT's patch sampler and projection head (Park et al. 2020, "Contrastive Learning for Unpaired
Image-to-Image Translation"; taesungp/contrastive-unpaired-translation `networks.py` PatchSampleF).

CUT and FastCUT translate with the CycleGAN ResNet generator and judge with the PatchGAN
(`lowshot.models.cyclegan`); what they add is this head: for each encoder feature map of the
generator it picks `patches` random positions (the same positions for every image of the batch, and
for the query and the key side), projects each position's feature vector through a two-layer MLP of
width 256 and L2-normalises it. The loss that compares them is `lowshot.train.losses.patch_nce_loss`.
Networks only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lowshot.models.cyclegan import init_weights


class PatchSampleMLP(nn.Module):
    """One MLP (Linear(C_i, width), ReLU, Linear(width, width)) per encoder feature of C_i channels.

    `forward(feats, patches, ids=None, generator=None)` -> (projections, ids): for each feature
    (N, C, H, W) the projections (N, P, width), L2-normalised, at P = min(patches, H*W) positions;
    `ids` are the flat positions used (drawn from `generator` when not given). Xavier init with
    gain 0.02, as the reference.
    """

    def __init__(self, channels: Sequence[int], width: int = 256) -> None:
        super().__init__()
        if not channels or any(c < 1 for c in channels) or width < 1:
            raise ValueError(f"PatchSampleMLP needs positive channel counts and width, got {list(channels)}, {width}")
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, width), nn.ReLU(inplace=True), nn.Linear(width, width)) for c in channels)
        init_weights(self, kind="xavier")

    def forward(self, feats: Sequence[torch.Tensor], patches: int, ids: Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(feats) != len(self.mlps):
            raise ValueError(f"PatchSampleMLP has {len(self.mlps)} heads but got {len(feats)} feature maps")
        out, used = [], []
        for i, (feat, mlp) in enumerate(zip(feats, self.mlps)):
            n, c, h, w = feat.shape
            flat = feat.permute(0, 2, 3, 1).reshape(n, h * w, c)
            if ids is None:
                pick = torch.randperm(h * w, generator=generator)[:min(patches, h * w)].to(feat.device)
            else:
                pick = ids[i]
            out.append(F.normalize(mlp(flat[:, pick, :]), dim=-1))
            used.append(pick)
        return out, used
