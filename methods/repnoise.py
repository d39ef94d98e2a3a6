"""RepNoise (Representation Noising): push every layer's activations on harmful text towards Gaussian noise.

Paper: Rosati, Wehner, Williams, Bartoszcze, Atanasov, Gonzales, Majumdar, Maple, Sajjad, Rudzicz,
"Representation Noising: A Defence Mechanism Against Harmful Finetuning", NeurIPS 2024,
arXiv 2405.14577 (v1: "Representation noising effectively prevents harmful fine-tuning on LLMs").
Official code: domenicrosati/representation-noising, ``representation_noising/loss.py``
(``rep_noise_loss``), which this module transcribes.

Objective, on paired batches that share each prompt: a harmful response (here the forget
answer) and a harmless one (here the forget question's alternate answer, e.g. a refusal):

    L = ell_harmless
        - alpha * log( (ell_harmful + sum_{l=0}^{L} ell_harmful^(l)) / (L + 1) + 1 )
        + beta * (1/L) sum_{i=1}^{L} MMD( mlp_i(x_harmful), N(0, I) )

- ell: token-mean cross-entropy of the response tokens; ell_harmful is that of the model's
  output, ell_harmful^(l) that of the logit lens ``lm_head(norm(h_l))`` of every hidden state
  ``h_0 .. h_L`` as ``output_hidden_states`` returns them (embeddings first; the last one is
  already final-normed, and is normed again, as in the code). The code adds the L + 1 lens
  losses to the output's loss and divides by L + 1 (not L + 2), adds 1 and takes the log, so the
  ascent term is bounded in its pull.
- MMD: for each decoder layer the output of its MLP block (the code hooks ``model.layers.i.mlp``),
  zeroed outside the harmful response tokens and flattened per sequence, ``(B, T * H)``, against
  as many samples of standard Gaussian noise zeroed the same way; Gaussian kernels with five
  bandwidths ``s * 2^k`` (k = 0..4) around ``s`` = the mean pairwise squared distance (detached)
  divided by 4 (``kernel_mul = 2``, ``kernel_num = 5``); the biased estimator
  ``mean(K_xx + K_yy - K_xy - K_yx)``; averaged over the decoder layers.

No retain set and no reference model: the harmless responses are the only anchor, as in the paper.

Departures from the code: (1) the code's mask is "positions where the paired harmful and
harmless token ids differ", over batches padded to one fixed length; it then zeroes the logits
(not the loss) at the first response position, so that token's CE is a constant log V, and it
scores the harmless batch on the harmful batch's mask. Here each cross-entropy covers its own
batch's answer tokens (the engine's label mask), and the MMD mask is the harmful batch's answer
tokens. (2) Pairwise squared distances are computed as ``|x|^2 + |y|^2 - 2 x.y`` (clamped at 0)
instead of materialising ``(N, N, d)`` differences; the value is the same up to rounding.
(3) The noise comes from torch's global generator (seeded by the run), as in the code.
The paper's learning rate and number of defence steps were not verified (the paper's text is not
in the search index), so the run settings are the engine's unless the record sets them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

from unlearn_kb.engine.data import IGNORE_INDEX
from unlearn_kb.engine.method import (
    GradientMethod,
    Step,
    decoder_layers,
    keep_outputs,
    label_logprobs,
    nll,
    with_total,
)
from unlearn_kb.errors import ConfigError

KERNEL_MUL = 2.0  # MMD_loss(kernel_mul=2.0) in the code
KERNEL_NUM = 5  # MMD_loss(kernel_num=5) in the code


@dataclass(frozen=True)
class Config:
    alpha: float  # weight of the (log) gradient-ascent term on harmful responses
    beta: float  # weight of the MMD term pulling every layer's MLP output on harmful tokens to Gaussian noise


# --------------------------------------------------------------------------- the objective


def mmd(source: torch.Tensor, target: torch.Tensor, kernel_mul: float = KERNEL_MUL,
        kernel_num: int = KERNEL_NUM) -> torch.Tensor:
    """Biased MMD^2 estimate with a sum of Gaussian kernels, as the code's ``MMD_loss``.

    ``source``, ``target``: ``(n, d)`` each (same n). Bandwidths ``s * kernel_mul^k`` for
    ``k = 0..kernel_num - 1``, ``s = mean_{i != j} |z_i - z_j|^2 / kernel_mul^(kernel_num // 2)``
    over the pooled samples, without gradient; returns ``mean(K_xx + K_yy - K_xy - K_yx)``.
    """
    n = source.shape[0]
    total = torch.cat([source, target]).float()  # (2n, d)
    squared = total.pow(2).sum(-1)  # (2n,)
    distance = (squared[:, None] + squared[None, :] - 2.0 * total @ total.T).clamp(min=0)  # (2n, 2n)
    pooled = total.shape[0]
    bandwidth = distance.detach().sum() / (pooled * pooled - pooled)
    bandwidth = (bandwidth / kernel_mul ** (kernel_num // 2)).clamp(min=1e-12)
    kernel = sum(torch.exp(-distance / (bandwidth * kernel_mul**k)) for k in range(kernel_num))  # (2n, 2n)
    xx, yy = kernel[:n, :n], kernel[n:, n:]  # type: ignore[index]
    xy, yx = kernel[:n, n:], kernel[n:, :n]  # type: ignore[index]
    return torch.mean(xx + yy - xy - yx)


def noise_loss(activations: list[torch.Tensor], mask: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ``mmd(a * m, noise * m)``, each sequence flattened to one sample.

    ``activations``, ``noise``: one ``(B, T, H)`` per layer; ``mask``: harmful response tokens ``(B, T)``.
    """
    keep = mask.unsqueeze(-1).to(activations[0].dtype)  # (B, T, 1)
    total = sum(mmd((a * keep).flatten(1), (z * keep).flatten(1)) for a, z in zip(activations, noise, strict=True))
    return total / len(activations)  # type: ignore[return-value]


def harmful_ascent(output_loss: torch.Tensor, lens_losses: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """``-alpha * log((ell + sum_l ell^(l)) / n_lens + 1)``, the code's bounded ascent; scalars in."""
    return -alpha * torch.log((output_loss + sum(lens_losses)) / len(lens_losses) + 1.0)


# --------------------------------------------------------------------------- the method


class RepNoise(GradientMethod):
    uses_alternate = True  # the harmless (refusal) response paired with each harmful one

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None

    def prepare(self, model: torch.nn.Module, config: Config, generator: torch.Generator) -> None:
        layers = decoder_layers(model)
        if not all(hasattr(layer, "mlp") for layer in layers):
            raise ConfigError("repnoise reads each decoder layer's '.mlp' output (Llama-style); this model has none")
        self.model = model

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        assert self.model is not None, "prepare() runs before the first step"
        model = self.model
        layers = decoder_layers(model)
        watched: dict[Hashable, torch.nn.Module] = {"embeddings": model.get_input_embeddings()}
        watched.update({("layer", i): layer for i, layer in enumerate(layers)})
        watched.update({("mlp", i): layer.mlp for i, layer in enumerate(layers)})
        with keep_outputs(watched) as kept:
            output_loss = nll(step.token_logprobs("forget"), step.mask("forget"))  # one full forward
        if len(kept) != len(watched):
            raise RuntimeError("repnoise: the forget forward pass did not run inside the capture")

        # output_hidden_states of that pass: embeddings, layers 0..L-2, final-normed layer L-1
        norm, head = model.get_decoder().norm, model.get_output_embeddings()
        hidden = [kept["embeddings"], *(kept[("layer", i)] for i in range(len(layers) - 1)),
                  norm(kept[("layer", len(layers) - 1)])]
        targets, mask = step.targets("forget"), step.mask("forget")
        lens = [nll(label_logprobs(head(norm(h))[:, :-1], targets), mask) for h in hidden]

        activations = [kept[("mlp", i)] for i in range(len(layers))]  # (B, T, H) each
        noise = [torch.randn_like(a) for a in activations]
        response = step.batch("forget")["labels"] != IGNORE_INDEX  # (B, T): harmful response tokens
        return with_total({
            "harmless": nll(step.token_logprobs("alternate"), step.mask("alternate")),
            "ascent": harmful_ascent(output_loss, lens, config.alpha),
            "noise": config.beta * noise_loss(activations, response, noise),
        })
