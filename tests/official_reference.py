"""Reference networks written from the description of the official Express4D code (issue #15), with the official
attribute names, so their ``state_dict`` has the official keys. Random weights, saved in the official formats,
stand in for the released checkpoints in the converter tests. Not the official code: re-derived from its layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


# --- MDM -------------------------------------------------------------------------------------------------
class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe[:, None, :])  # [max_len, 1, d]

    def forward(self, x):
        return self.dropout(x + self.pe[: x.shape[0]])


class TimestepEmbedder(nn.Module):
    def __init__(self, latent_dim: int, sequence_pos_encoder: PositionalEncoding):
        super().__init__()
        self.sequence_pos_encoder = sequence_pos_encoder
        self.time_embed = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.SiLU(), nn.Linear(latent_dim, latent_dim))

    def forward(self, timesteps):
        return self.time_embed(self.sequence_pos_encoder.pe[timesteps]).permute(1, 0, 2)  # [1, B, d]


class InputProcess(nn.Module):
    def __init__(self, input_feats: int, latent_dim: int):
        super().__init__()
        self.poseEmbedding = nn.Linear(input_feats, latent_dim)

    def forward(self, x):
        batch, njoints, nfeats, frames = x.shape
        return self.poseEmbedding(x.permute(3, 0, 1, 2).reshape(frames, batch, njoints * nfeats))


class OutputProcess(nn.Module):
    def __init__(self, input_feats: int, latent_dim: int, njoints: int, nfeats: int):
        super().__init__()
        self.njoints, self.nfeats = njoints, nfeats
        self.poseFinal = nn.Linear(latent_dim, input_feats)

    def forward(self, output):
        frames, batch, _ = output.shape
        return self.poseFinal(output).reshape(frames, batch, self.njoints, self.nfeats).permute(1, 2, 3, 0)


class ReferenceMDM(nn.Module):
    """Sequence-first, post-norm ``nn.TransformerEncoder`` with no final norm; condition token first."""

    def __init__(self, latent_dim=512, num_layers=8, njoints=61, nfeats=1, clip_dim=512, ff_size=1024, num_heads=4,
                 dropout=0.1):  # fmt: skip
        super().__init__()
        self.input_process = InputProcess(njoints * nfeats, latent_dim)
        self.sequence_pos_encoder = PositionalEncoding(latent_dim, dropout)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_size, dropout, activation="gelu")
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.embed_timestep = TimestepEmbedder(latent_dim, self.sequence_pos_encoder)
        self.embed_text = nn.Linear(clip_dim, latent_dim)
        self.output_process = OutputProcess(njoints * nfeats, latent_dim, njoints, nfeats)

    def forward(self, x, timesteps, text_features, uncond, mask):
        """x ``[B, 61, 1, T]``; text_features ``[B, clip_dim]`` (CLIP encode_text); uncond ``[B]`` bool (drop the
        text: the official mask_cond zeroes it); mask ``[B, 1, 1, T]`` bool, True on valid frames."""
        emb = self.embed_timestep(timesteps)
        text = text_features * (~uncond).float()[:, None]
        emb = emb + self.embed_text(text)
        x = self.input_process(x)
        key_padding = torch.logical_not(mask[..., : x.shape[0]].squeeze(1).squeeze(1))
        key_padding = torch.cat([torch.zeros(x.shape[1], 1, dtype=torch.bool), key_padding], dim=1)
        xseq = self.sequence_pos_encoder(torch.cat((emb, x), dim=0))
        output = self.seqTransEncoder(xseq, src_key_padding_mask=key_padding)[1:]
        return self.output_process(output)


def save_official_mdm(folder: Path, latent_dim=32, num_layers=2, clip_dim=16, seed=0, ema=True, **args) -> Path:
    """Random ReferenceMDM weights as ``model000000100.pt`` (``{'model', 'model_avg'}`` or flat) + ``args.json``."""
    torch.manual_seed(seed)
    model = ReferenceMDM(latent_dim=latent_dim, num_layers=num_layers, clip_dim=clip_dim)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if ema:
        torch.manual_seed(seed + 1)
        avg = ReferenceMDM(latent_dim=latent_dim, num_layers=num_layers, clip_dim=clip_dim).state_dict()
        payload = {"model": state, "model_avg": avg, "opt": {"state": {}}}
    else:
        payload = state
    path = folder / "model000000100.pt"
    torch.save(payload, path)
    (folder / "args.json").write_text(json.dumps({
        "dataset": "express4d", "arch": "trans_enc", "latent_dim": latent_dim, "layers": num_layers,
        "diffusion_steps": 1000, "noise_schedule": "cosine", "sigma_small": True, "cond_mask_prob": 0.1,
        "guidance_param": 2.5, **args,
    }))  # fmt: skip
    return path


# --- evaluator (HumanML3D layout) -------------------------------------------------------------------------
class MovementConvEncoder(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1), nn.Dropout(0.2, inplace=True), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1), nn.Dropout(0.2, inplace=True), nn.LeakyReLU(0.2, inplace=True),
        )  # fmt: skip
        self.out_net = nn.Linear(output_size, output_size)

    def forward(self, inputs):
        return self.out_net(self.main(inputs.permute(0, 2, 1)).permute(0, 2, 1))


class _BiGRUCo(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size), nn.LayerNorm(hidden_size), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_size, output_size),
        )  # fmt: skip
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))

    def _run(self, inputs, lengths):
        hidden = self.hidden.repeat(1, inputs.shape[0], 1)
        packed = pack_padded_sequence(self.input_emb(inputs), lengths.tolist(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed, hidden)
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))


class MotionEncoderBiGRUCo(_BiGRUCo):
    def forward(self, inputs, m_lens):
        return self._run(inputs, m_lens)


class TextEncoderBiGRUCo(_BiGRUCo):
    def __init__(self, word_size, pos_size, hidden_size, output_size):
        super().__init__(word_size, hidden_size, output_size)
        self.pos_emb = nn.Linear(pos_size, word_size)

    def forward(self, word_embs, pos_onehot, cap_lens):
        return self._run(word_embs + self.pos_emb(pos_onehot), cap_lens)


def save_official_evaluator(path: Path, movement_hidden=24, movement_latent=20, motion_hidden=16, text_hidden=12,
                            out_dim=8, word_dim=10, pos_dim=15, seed=0):  # fmt: skip
    torch.manual_seed(seed)
    nets = {
        "movement_encoder": MovementConvEncoder(61, movement_hidden, movement_latent),
        "motion_encoder": MotionEncoderBiGRUCo(movement_latent, motion_hidden, out_dim),
        "text_encoder": TextEncoderBiGRUCo(word_dim, pos_dim, text_hidden, out_dim),
    }
    payload = {k: v.state_dict() for k, v in nets.items()}
    payload.update(opt_movement_encoder={"state": {}, "param_groups": []}, epoch=7, iter=1234)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return nets
