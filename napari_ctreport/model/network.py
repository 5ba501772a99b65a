"""The CT report network: a hybrid 3-D conv / transformer encoder, anchor-free detection heads,
finding-level cross-attention (the attention maps) and a small GPT-2 report decoder.

Layout (all sizes from the model config)::

    CT patch (1, D, H, W), HU clipped and scaled, at the model spacing
      stem  conv 3^3            -> f1  stride 1  (c0)
      down  conv s2 + res block -> f2  stride 2  (c1)
      down  conv s2 + res block -> f4  stride 4  (c2)
      down  conv s2 + CPE + timm transformer blocks over the window's tokens -> f8 stride 8 (c3)
      up    f8 -> stride 4, + f4, res block -> d4 (c2): heatmap (per kind), size (dz,dy,dx), offset
      up    d4 -> stride 2, + f2 -> stride 1, + f1 -> mask logit (lesion foreground)

    finding query  = proj(d4 at the peak) + lexicon embedding of its kind
      cross-attends (nn.MultiheadAttention) over the f8 tokens around the finding, with a learned
      relative-position term on the keys; the weights are the finding's attention map, the
      attended feature is classified into the kinds (training signal for the attention).

    report decoder = GPT2LMHeadModel(add_cross_attention=True) whose cross-attention memory is
      [attended feature, peak feature, the finding's kind/side/zone/size-bin embeddings,
       the whole lexicon's embeddings (knowledge tokens)].

Sizes are never read from the network: a finding's measurements come from its mask.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..report.lexicon import KINDS, SIDES, ZONES

#: Lexicon entries the knowledge embeddings cover, in order: kinds, sides, zones.
LEXICON_TERMS: tuple[str, ...] = (
    *(f"kind:{k}" for k in KINDS),
    *(f"side:{s}" for s in SIDES),
    *(f"zone:{z}" for z in ZONES),
)

#: Upper edges (mm) of the diameter bins fed to the decoder as a structured attribute.
SIZE_BINS_MM: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0)


def size_bin(diameter_mm: float) -> int:
    """Index of the diameter bin of ``diameter_mm`` (``len(SIZE_BINS_MM)`` for the largest)."""
    for i, edge in enumerate(SIZE_BINS_MM):
        if diameter_mm < edge:
            return i
    return len(SIZE_BINS_MM)


class ChannelNorm(nn.Module):
    """LayerNorm over channels at every voxel: independent of batch and window, so sliding-window
    predictions stitch like a full-volume pass."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock(nn.Module):
    """Two 3^3 convolutions with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm = ChannelNorm(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.norm(self.conv1(x))))


class Down(nn.Module):
    """Strided 3^3 convolution (stride 2), channel norm, GELU, optional residual block."""

    def __init__(self, cin: int, cout: int, *, block: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, stride=2, padding=1)
        self.norm = ChannelNorm(cout)
        self.block = ResBlock(cout) if block else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.gelu(self.norm(self.conv(x))))


class SepBlock(nn.Module):
    """Depthwise 3^3 + pointwise convolution with a residual connection (cheap at high resolution)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv3d(channels, channels, 3, padding=1, groups=channels)
        self.norm = ChannelNorm(channels)
        self.pw = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(F.gelu(self.norm(self.dw(x))))


def _sinusoid(offsets: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of (..., 3) offsets in mm -> (..., dim)."""
    n = dim // 6
    freqs = torch.exp(
        torch.linspace(math.log(1 / 8.0), math.log(1 / 256.0), n, device=offsets.device)
    )
    ang = offsets[..., :, None] * freqs * 2 * math.pi  # (..., 3, n)
    feats = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(-2)  # (..., 6n)
    if feats.shape[-1] < dim:
        feats = F.pad(feats, (0, dim - feats.shape[-1]))
    return feats


class CTReportNet(nn.Module):
    """The whole model; see the module docstring.

    Parameters
    ----------
    config
        Model configuration (the ``config.json`` of a model folder): ``channels`` (4 ints),
        ``depth``, ``heads``, ``spacing_zyx``, ``vocab_size``, ``decoder`` (n_layer, n_embd,
        n_head, n_positions), ``pad_token_id``, ``bos_token_id``, ``eos_token_id``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block
        from transformers import GPT2Config, GPT2LMHeadModel

        self.config = dict(config)
        c0, c1, c2, c3 = config["channels"]
        self.num_kinds = len(KINDS)
        self.stem = nn.Sequential(nn.Conv3d(1, c0, 3, padding=1), nn.GELU())
        self.down2 = Down(c0, c1, block=False)
        self.down4 = Down(c1, c2)
        self.down8 = nn.Sequential(
            nn.Conv3d(c2, c3, 3, stride=2, padding=1), ChannelNorm(c3), nn.GELU()
        )
        self.cpe = nn.Conv3d(c3, c3, 3, padding=1, groups=c3)
        self.blocks = nn.ModuleList(
            Block(c3, config["heads"], mlp_ratio=2.0, qkv_bias=True) for _ in range(config["depth"])
        )
        self.token_norm = nn.LayerNorm(c3)
        self.up8 = nn.Conv3d(c3, c2, 1)
        self.dec4 = ResBlock(c2)
        self.heat = nn.Sequential(nn.Conv3d(c2, c2, 1), nn.GELU(), nn.Conv3d(c2, self.num_kinds, 1))
        self.size = nn.Sequential(nn.Conv3d(c2, c2, 1), nn.GELU(), nn.Conv3d(c2, 3, 1))
        self.offset = nn.Sequential(nn.Conv3d(c2, c2, 1), nn.GELU(), nn.Conv3d(c2, 3, 1))
        nn.init.constant_(self.heat[-1].bias, -2.19)
        self.up4 = nn.Conv3d(c2, c1, 1)
        self.dec2 = SepBlock(c1)
        self.mask_head = nn.Conv3d(c1 + c0, 1, 1)

        # finding-level cross-attention over encoder tokens
        self.lexicon = nn.Embedding(len(LEXICON_TERMS), c3)
        self.query_proj = nn.Linear(c2, c3)
        self.relpos = nn.Linear(c3, c3)
        self.cross = nn.MultiheadAttention(c3, config["heads"], batch_first=True)
        self.kind_cls = nn.Sequential(nn.LayerNorm(c3), nn.Linear(c3, self.num_kinds))

        # report decoder
        dec = config["decoder"]
        n_embd = dec["n_embd"]
        gcfg = GPT2Config(
            vocab_size=config["vocab_size"],
            n_positions=dec["n_positions"],
            n_embd=n_embd,
            n_layer=dec["n_layer"],
            n_head=dec["n_head"],
            add_cross_attention=True,
            bos_token_id=config["bos_token_id"],
            eos_token_id=config["eos_token_id"],
            pad_token_id=config["pad_token_id"],
            resid_pdrop=0.1,
            embd_pdrop=0.1,
            attn_pdrop=0.1,
        )
        self.decoder = GPT2LMHeadModel(gcfg)
        self.mem_visual = nn.Linear(c3, n_embd)
        self.mem_peak = nn.Linear(c2, n_embd)
        self.mem_lexicon = nn.Linear(c3, n_embd)
        self.mem_type = nn.Embedding(4, n_embd)  # visual, finding attribute, size, knowledge
        self.mem_size = nn.Embedding(len(SIZE_BINS_MM) + 1, n_embd)

    # ------------------------------------------------------------------ dense part
    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense maps of a (B, 1, D, H, W) patch (D, H, W multiples of 8).

        Returns ``heat`` (B, K, D/4..) logits, ``size`` (B, 3, D/4..) log-sizes in model voxels,
        ``offset`` (B, 3, D/4..), ``mask`` (B, 1, D, H, W) logits, ``feat4`` (B, c2, D/4..) and
        ``tokens`` (B, c3, D/8..).
        """
        f1 = self.stem(x)
        f2 = self.down2(f1)
        f4 = self.down4(f2)
        f8 = self.down8(f4)
        f8 = f8 + self.cpe(f8)
        b, c, d, h, w = f8.shape
        t = f8.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t)
        t = self.token_norm(t)
        tokens = t.transpose(1, 2).reshape(b, c, d, h, w)
        d4 = self.dec4(f4 + F.interpolate(self.up8(tokens), scale_factor=2, mode="nearest"))
        d2 = self.dec2(f2 + F.interpolate(self.up4(d4), scale_factor=2, mode="nearest"))
        # the 1x1 mask head is linear, so it commutes with the upsampling of the stride-2 part
        w_d, w_f = self.mask_head.weight.split([d2.shape[1], f1.shape[1]], dim=1)
        coarse = F.conv3d(d2, w_d)
        mask = F.interpolate(coarse, scale_factor=2, mode="trilinear", align_corners=False)
        mask = mask + F.conv3d(f1, w_f, self.mask_head.bias)
        return {
            "heat": self.heat(d4),
            "size": self.size(d4),
            "offset": self.offset(d4),
            "mask": mask,
            "feat4": d4,
            "tokens": tokens,
        }

    # ------------------------------------------------------------------ finding attention
    def attend(
        self,
        peak_feat: torch.Tensor,
        kind_ids: torch.Tensor,
        tokens: torch.Tensor,
        rel_mm: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-attention of N finding queries over their neighbourhood tokens.

        Parameters
        ----------
        peak_feat
            (N, c2) decoder feature at each finding's peak.
        kind_ids
            (N,) 0-based kind index of each finding.
        tokens
            (N, T, c3) encoder tokens around each finding.
        rel_mm
            (N, T, 3) offset in mm (z, y, x) of each token from the finding centre.
        key_padding_mask
            (N, T) True where a token is padding.

        Returns
        -------
        attended (N, c3), weights (N, T) and kind logits (N, K).
        """
        q = self.query_proj(peak_feat) + self.lexicon(kind_ids)
        k = tokens + self.relpos(_sinusoid(rel_mm, tokens.shape[-1]))
        out, weights = self.cross(
            q[:, None], k, tokens, key_padding_mask=key_padding_mask, need_weights=True
        )
        attended = out[:, 0]
        return attended, weights[:, 0], self.kind_cls(attended)

    # ------------------------------------------------------------------ report decoder
    def memory(
        self,
        attended: torch.Tensor,
        peak_feat: torch.Tensor,
        kind_ids: torch.Tensor,
        side_ids: torch.Tensor,
        zone_ids: torch.Tensor,
        size_bins: torch.Tensor,
    ) -> torch.Tensor:
        """Cross-attention memory (N, M, n_embd) for the report decoder."""
        n = attended.shape[0]
        lex = self.mem_lexicon(self.lexicon.weight)  # (L, E)
        kind_tok = lex[kind_ids]
        side_tok = lex[len(KINDS) + side_ids]
        zone_tok = lex[len(KINDS) + len(SIDES) + zone_ids]
        types = self.mem_type.weight
        visual = (
            torch.stack([self.mem_visual(attended), self.mem_peak(peak_feat)], dim=1) + types[0]
        )
        attrs = torch.stack([kind_tok, side_tok, zone_tok], dim=1) + types[1]
        size = self.mem_size(size_bins)[:, None] + types[2]
        knowledge = (lex + types[3])[None].expand(n, -1, -1)
        return torch.cat([visual, attrs, size, knowledge], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - thin alias
        return self.encode(x)


def lexicon_index(side: str, zone: str) -> tuple[int, int]:
    """Indices of a side and a zone within :data:`SIDES` and :data:`ZONES`."""
    return SIDES.index(side), ZONES.index(zone)
