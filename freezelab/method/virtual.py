"""The virtual-transition lens: d_l = distance from N(h_l) to a virtual point on a straight line.

The paper's first version speaks of a *virtual* transition of the latent representation beside
its *factual* one. The authors' later public code (repository jianguda/toolkit, file
lm_lens/function/core/mint_core.py, method `MintCore.compute_traction`) builds one target per
layer that moves in a straight line from the input side to the output side:
`torch.lerp(input_medium_base, output_target_base, (layer_idx + 1) / num_layers)`, where
- `input_medium_base` is a row of the input embedding matrix (`get_embedding_matrix`: the token
  embedding's weight), for the prompt's last token (`pipeline`: `medium_label = input_ids[0, -1]`);
- `output_target_base` is the target label's row of `pinv(lm_head.weight.T)` (`get_lm_head_matrix`),
  the semantic basis s_y (`freezelab.method.basis`).
Read as a lens, the factual state N(h_l) (through `LoadedModel.finish`, like every lens) is
compared with that virtual point. The reading is ours (book/method.md); each choice is an option:
- `distance`: `cosine` (1 - cos) or `euclidean` (||N(h_l) - v_l||). The code computes no distance:
  it pushes weights along the target's direction, each layer's drift divided by its range
  (`compute_traction`), so only the direction counts there, which is what `cosine` compares.
- `base`: `token` (the prediction position's token embedding row, as `pipeline` picks
  `medium_label`) or `mean` (the mean embedding row of the whole prompt: ours).
- `index`: `l` gives latent space l the ratio l / L: `layer_idx` in the code is the 0-based
  index of the block whose output the traction edits, i.e. block l = layer_idx + 1 in our
  numbering, so block l's output (latent space l) gets (layer_idx + 1) / L = l / L, from the
  embedding row at l = 0 to the label basis at l = L. `l+1` reads `layer_idx` as the latent
  space itself, ratio (l + 1) / L: the basis is reached at l = L - 1 and overshot at l = L.
The defaults (the first value of each option) are the options chosen on the development pair,
SmolLM2-135M x BBC News, by the knee study's criterion (`freezelab.study.virtual_lens`, recorded
with the evidence in book/results/virtual_lens.json): distance=euclidean, base=token, index=l.
The authors' code corresponds to base=token, index=l and (in our reading) distance=cosine.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from freezelab.errors import FreezelabError
from freezelab.method.basis import semantic_basis_columns
from freezelab.method.trace import Trace
from freezelab.model.models import LoadedModel

# option -> values, the default first
VIRTUAL_OPTIONS: dict[str, tuple[str, ...]] = {"distance": ("euclidean", "cosine"), "base": ("token", "mean"),
                                               "index": ("l", "l+1")}


def virtual_points(source: torch.Tensor, target: torch.Tensor, num_layers: int, index: str = "l") -> torch.Tensor:
    """The virtual transition v_0..v_L: (n, d) input bases and (n, d) label bases -> (n, L+1, d).

    v_l = lerp(source, target, r_l), r_l = l / L (`index="l"`) or (l + 1) / L (`index="l+1"`)."""
    shift = {"l": 0, "l+1": 1}[index]
    ratio = (torch.arange(num_layers + 1, dtype=torch.float32) + shift) / num_layers  # (L+1,)
    return torch.lerp(source[:, None, :].float(), target[:, None, :].float(), ratio[None, :, None])


def distance_to(hn: torch.Tensor, points: torch.Tensor, distance: str) -> torch.Tensor:
    """(n, L+1, d) states and points -> (n, L+1): 1 - cosine, or the Euclidean distance."""
    if distance == "cosine":
        return 1 - F.cosine_similarity(hn, points, dim=-1)
    return (hn - points).norm(dim=-1)


def input_bases(lm: LoadedModel, trace: Trace, base: str) -> torch.Tensor:
    """The input side of the line, (n, d): the token embedding row of each prompt's last token
    (`token`) or the mean row over the whole prompt (`mean`)."""
    if trace.prompts is None:
        raise FreezelabError("the virtual lens needs the prompts' token ids: trace with "
                             "freezelab.method.trace (or a LatentCache's trace), which keeps them")
    table = lm.embeddings[0].weight.detach()
    rows = [table[torch.as_tensor(p[-1:] if base == "token" else p, device=table.device)].float().mean(0)
            for p in trace.prompts]
    return torch.stack(rows).cpu()


def virtual_lens(lm: LoadedModel, trace: Trace, hn: torch.Tensor, distance: str = "euclidean",
                 base: str = "token", index: str = "l") -> torch.Tensor:
    """d_l = distance(N(h_l), v_l) per example and latent space: hn (n, L+1, d) -> (n, L+1) on CPU."""
    ids, inverse = trace.targets.unique(return_inverse=True)
    target = semantic_basis_columns(lm, ids)[inverse]  # (n, d): s_y
    points = virtual_points(input_bases(lm, trace, base), target, hn.shape[1] - 1, index)
    return distance_to(hn.float(), points, distance)
