"""The trace is the cache: the latent spaces h_0..h_L at every position of every example, stored by
one no-grad forward of the pretrained model and reused by every run that freezes a prefix.

A cut-k run reads h_k from here and runs only blocks k+1..L (`LoadedModel.forward_from`); the
method's trace is the same tensor read at the prediction positions (`LatentCache.trace`).
Storage is in RAM up to `max_ram_mb`, memory-mapped on disk beyond it. On disk a cache lives in a
folder named by its fingerprint (model, weights, examples as token ids, latent spaces, precision),
so a reused directory can never serve another run's tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from freezelab.model.encode import Encoded, batches
from freezelab.errors import FreezelabError
from freezelab.model.models import LoadedModel
from freezelab.method.trace import Trace, latent_states

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class LatentCache:
    """h_l for the stored latent spaces `layers`, every token of n right-padded prompts."""

    layers: tuple[int, ...]  # latent spaces stored (0 = embedding output, l = output of block l)
    offsets: torch.Tensor  # (n+1,) first token of each example in `data`
    data: torch.Tensor  # (len(layers), tokens, d) in RAM, or memory-mapped from `path`
    fingerprint: str
    path: Path | None = None  # the memory-mapped file, None in RAM

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise FreezelabError(f"latent space {layer} is not in this cache (it holds {list(self.layers)})")
        return self.layers.index(layer)

    def states(self, layer: int, index: Sequence[int], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """h_layer of examples `index`, right-padded with zeros like `collate`: (B, T, d)."""
        rows = self.data[self.slot(layer)]
        spans = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in index]
        width = max(b - a for a, b in spans)
        out = torch.zeros(len(spans), width, rows.shape[-1], dtype=dtype)
        for r, (a, b) in enumerate(spans):
            out[r, : b - a] = rows[a:b]
        return out.to(device)

    def trace(self, enc: Encoded, index: Sequence[int] | None = None) -> Trace:
        """The method's trace (prediction-position h_0..h_L) of examples `index` (default: all)."""
        if self.layers != tuple(range(len(self.layers))):
            raise FreezelabError("a trace needs every latent space 0..L in the cache")
        index = list(range(len(self))) if index is None else list(index)
        last = self.offsets[torch.as_tensor(index) + 1] - 1  # prediction position = last prompt token
        hidden = self.data[:, last].float().transpose(0, 1).contiguous()  # (n, L+1, d)
        idx = torch.as_tensor(index, dtype=torch.long)
        return Trace(hidden, enc.targets[idx], enc.label_ids,
                     None if enc.labels is None else enc.labels[idx], 0.0, [enc.prompts[i] for i in index])


def weights_digest(lm: LoadedModel) -> str:
    """A digest of every parameter and buffer of `lm` (names, shapes, values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in list(lm.model.named_parameters()) + list(lm.model.named_buffers()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(lm: LoadedModel, enc: Encoded, layers: Sequence[int], dtype: str) -> str:
    """What a cache's tensors depend on: model name and config, weights, token ids, layers, precision."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"model": lm.name, "config": lm.model.config.to_json_string(),
                         "weights": weights_digest(lm), "prompts": enc.prompts,
                         "targets": enc.targets.tolist(), "layers": list(layers),
                         "dtype": dtype}, sort_keys=True).encode())
    return h.hexdigest()


def build_cache(lm: LoadedModel, enc: Encoded, layers: Sequence[int] | None = None,
                dtype: str = "fp32", max_ram_mb: float = 4096, directory: str | os.PathLike | None = None,
                batch_size: int = 16, progress: bool = True) -> LatentCache:
    """One no-grad forward over `enc` storing h_l at every token for `layers` (default 0..L).

    In RAM up to `max_ram_mb`; beyond it a memory-mapped file under `directory` (a temporary folder
    when None). With `directory`, a cache already stored there under the same fingerprint is
    reused and nothing is recomputed; a new one is written atomically (folder renamed when done).
    """
    if dtype not in DTYPES:
        raise FreezelabError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    layers = tuple(range(lm.num_layers + 1)) if layers is None else tuple(sorted(set(layers)))
    if not layers or not all(0 <= l <= lm.num_layers for l in layers):
        raise FreezelabError(f"latent spaces must be in 0..{lm.num_layers}, got {list(layers)}")
    key = fingerprint(lm, enc, layers, dtype)
    lengths = torch.tensor([len(p) for p in enc.prompts])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    # the residual stream's width: the head's (`lm.hidden_size`) differs where a projection follows N (OPT)
    shape = (len(layers), int(offsets[-1]), lm.model.config.hidden_size)
    torch_dtype = DTYPES[dtype]
    size_mb = torch.Size(shape).numel() * torch_dtype.itemsize / 2**20
    folder = None if directory is None else Path(directory) / key
    if folder is not None and (folder / "meta.json").exists():
        return LatentCache(layers, offsets, _map(folder / "data.bin", shape, torch_dtype), key, folder / "data.bin")
    on_disk = size_mb > max_ram_mb
    work = None
    if on_disk:
        root = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="freezelab-cache-"))
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        with open(work / "data.bin", "wb") as f:
            f.truncate(int(size_mb * 2**20))
        data = _map(work / "data.bin", shape, torch_dtype)
    else:
        data = torch.empty(shape, dtype=torch_dtype)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer is not None else 0
    start = 0
    try:
        with torch.inference_mode():
            for batch in tqdm(batches(enc, batch_size, pad, lm.device), total=-(-len(enc) // batch_size),
                              desc="cache", disable=not progress, leave=False):
                keep = latent_states(lm, batch, stop=max(layers))
                mask = batch.attention_mask.bool()
                stacked = torch.stack([keep[l] for l in layers])[:, mask].to("cpu", torch_dtype)
                data[:, start:start + stacked.shape[1]] = stacked  # one copy to the host per batch
                start += stacked.shape[1]
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if work is None:
        return LatentCache(layers, offsets, data, key)
    (work / "meta.json").write_text(json.dumps({"shape": shape, "dtype": dtype, "layers": layers,
                                                "model": lm.name, "examples": len(enc)}))
    if folder is None:
        return LatentCache(layers, offsets, data, key, work / "data.bin")
    del data
    try:
        os.replace(work, folder)
    except OSError:  # another process stored the same cache first: use theirs
        shutil.rmtree(work, ignore_errors=True)
    return LatentCache(layers, offsets, _map(folder / "data.bin", shape, torch_dtype), key, folder / "data.bin")


def _map(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    numel = torch.Size(shape).numel()
    return torch.from_file(str(path), shared=True, size=numel, dtype=dtype).view(shape)
