"""The loss contract: what a metric-learning loss must provide to be trained and analysed by eif.

docs/losses.md has the long form. In short, a loss is a :class:`MetricLoss` whose per-sample losses
are **batch-independent**: L_i depends only on z_i, y_i and the loss's own parameters (proxies, class
weights), never on the other samples of the batch. ``per_sample`` of any subset of samples, with any
leading dims, is then exact, and EIF (moved embeddings of the whole training set at once), IF
(per-sample gradients and curvatures) and re-weighting (w_i L_i) are all well defined. A loss whose
terms come from pairs or triplets inside the batch sets ``batch_independent = False`` and is refused
(its settings class at config validation, the module by :func:`require_batch_independent`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from eif.settings import DISPLAY, Pluggable, setting
from eif.utils.errors import EifError


class MetricLoss(nn.Module):
    """A per-sample, batch-independent metric-learning loss (the contract; docs/losses.md).

    Required:

    - ``per_sample(z, y)``: embeddings z (..., B, E) (unnormalised), labels y (B,) int64 in [0, C) ->
      losses (..., B), L_i a function of (z_i, y_i) and the loss's parameters only. A pure tensor
      function (no in-place ops on inputs, no ``.item()``, no data-dependent Python control flow), so it
      broadcasts over leading dims of z and works under ``torch.func.vmap``/``grad``/``jvp``/``hessian``.
    - ``batch_independent`` (class attribute): True. A loss that cannot promise the above sets False
      and is refused (its settings at config validation, the module by ``ConfusionTask.from_loss``).

    Optional capabilities:

    - **cosine form**: a loss that depends on z only through the cosines cos(z_i, t_m) to M unit
      vectors implements :meth:`cosine_targets` (M, E) and :meth:`per_sample_cos` and inherits
      ``per_sample(z, y) = per_sample_cos(cosines(z), y)`` (one formula for both). EIF and IF then use
      closed forms through the M cosines (:meth:`has_cos_form`); without it they take generic autograd
      paths. A loss without that form overrides ``per_sample`` instead.
    - **softmax form** (on top of the cosine form): a loss that is a softmax cross-entropy on logits
      a * cos plus offsets that do not depend on the cosines returns a from :meth:`cos_logit_scale`;
      its curvature in the cosines then has a closed form (no autograd in the Hessian products).
    - **parameters** (proxies, class weights): trained with the model (``forward`` is differentiable in
      them) and saved in its state dict; influence freezes them (only the head weight W moves).
    - :meth:`regularizer`: a sample-independent term that ``forward`` adds once.

    ``forward(z, y, weights)``: mean_i(w_i * L_i) + ``regularizer()``; the sum is divided by B (not by
    sum w), as the reference does.
    """

    batch_independent: ClassVar[bool] = True

    def __init__(self, num_classes: int, embedding_size: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)

    def cosine_targets(self) -> torch.Tensor:
        """The unit vectors t_m (M, E) whose cosines with z the cosine form reads (e.g. unit proxies)."""
        raise NotImplementedError(f"{type(self).__name__} has no cosine form; it overrides per_sample")

    def cosines(self, z: torch.Tensor) -> torch.Tensor:
        """cos(z_i, t_m) (..., B, M) for embeddings z (..., B, E)."""
        return F.normalize(z, dim=-1) @ self.cosine_targets().transpose(-1, -2)

    def per_sample_cos(self, cos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (..., B) from the cosines (..., B, M) to every cosine target and labels (B,)."""
        raise NotImplementedError(f"{type(self).__name__} has no cosine form; it overrides per_sample")

    def cos_logit_scale(self) -> float | None:
        """a if L_i = -log softmax_m(a c_im + b_m(y_i))[y_i] with offsets b independent of the cosines
        c (a margin at the label, say), else None. Then g = dL/dc = a (p - e_y) and d^2L/dc^2 =
        a^2 (diag p - p p^T), p the softmax probabilities (:func:`eif.influence.ihvp.curvature_apply`)."""
        return None

    @classmethod
    def has_cos_form(cls) -> bool:
        """Whether this loss has the cosine form (:meth:`cosine_targets` and :meth:`per_sample_cos`)."""
        return (
            cls.per_sample_cos is not MetricLoss.per_sample_cos
            and cls.cosine_targets is not MetricLoss.cosine_targets
        )

    def per_sample(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (..., B) for embeddings (..., B, E) and labels (B,)."""
        return self.per_sample_cos(self.cosines(z), y)

    def regularizer(self) -> torch.Tensor | None:
        """A sample-independent term (a scalar) that :meth:`forward` adds once; None: no such term."""
        return None

    def forward(self, z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """mean_i(w_i * L_i) over the last (batch) dim plus the regulariser: shape (...)."""
        losses = self.per_sample(z, y)
        if weights is not None:
            losses = losses * weights.to(losses.dtype)
        reg = self.regularizer()
        return losses.mean(-1) if reg is None else losses.mean(-1) + reg


class ProxyLoss(MetricLoss):
    """A loss with its own proxies (class centres) ``proxies`` (C*K, E), centre ``c*K + k`` of class c,
    whose cosine targets are the unit proxies."""

    proxies: nn.Parameter

    def cosine_targets(self) -> torch.Tensor:
        """The L2-normalised proxies (C*K, E)."""
        return F.normalize(self.proxies, dim=-1)


def class_mask(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot (B, C) of labels y (B,), built by comparison so it works under ``torch.func.vmap``."""
    return (y.unsqueeze(-1) == torch.arange(num_classes, device=y.device)).to(dtype)


def at_label(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x[..., i, y_i]: x (..., B, C), labels y (B,) -> (..., B), by gather (no one-hot product)."""
    return x.gather(-1, y.expand(x.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def label_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[y]: logits (..., B, C), labels (B,) -> (..., B) (softmax cross-entropy)."""
    return -at_label(F.log_softmax(logits, dim=-1), y)


class LossConfig(Pluggable):
    """``loss``: a loss is one file plus one YAML; ``conf/loss/<name>.yaml`` names its settings class
    with ``_target_`` and :meth:`build` makes the :class:`MetricLoss` for the training classes.

    ``batch_independent`` (class attribute) mirrors the loss's: settings of a batch-dependent loss fail
    validation with one line (:func:`batch_dependent_message`), before anything is computed."""

    abstract: ClassVar[bool] = True
    batch_independent: ClassVar[bool] = True
    name: str = setting(unkeyed=DISPLAY)

    @model_validator(mode="after")
    def _per_sample_only(self) -> LossConfig:
        if not self.batch_independent:
            raise ValueError(batch_dependent_message(self.label))
        return self

    @property
    def label(self) -> str:
        """How errors name this loss."""
        return self.name

    def build(self, num_classes: int, embedding_size: int) -> MetricLoss:
        raise NotImplementedError


def per_sample_losses() -> list[str]:
    """The ``loss=`` names of every batch-independent loss settings class that is loaded, sorted."""
    found: set[str] = set()
    todo: list[type[LossConfig]] = [LossConfig]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        default = cls.model_fields["name"].default
        if cls.batch_independent and not cls.__dict__.get("abstract", False) and isinstance(default, str):
            found.add(default)
    return sorted(found)


def batch_dependent_message(what: str) -> str:
    """The one line that refuses a batch-dependent loss ``what``, naming the losses that work."""
    return (
        f"{what} is batch-dependent: a sample's loss depends on the other samples of its batch (the "
        "pairs or triplets it forms there), but influence (EIF, IF) and re-weighting need per-sample "
        "losses L_i(z_i, y_i) independent of the rest of the batch; use a per-sample loss: loss="
        + ", ".join(per_sample_losses())
        + " (docs/losses.md)"
    )


def require_batch_independent(loss: MetricLoss) -> None:
    """Raise :class:`EifError` (one line) unless ``loss`` declares itself batch-independent."""
    if not type(loss).batch_independent:
        raise EifError(batch_dependent_message(type(loss).__name__))
