"""Multi-class segmentation losses on logits (N, C, *spatial) and integer labels (N, *spatial)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from .registry import LOSSES


def _class_sums(logits: torch.Tensor, target: torch.Tensor, include_background: bool):
    """(TP, FP, FN) per class, summed over the batch and every voxel, from softmax probabilities."""
    probs = torch.softmax(logits.float(), 1)
    onehot = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    axes = [0, *range(2, probs.ndim)]
    tp = (probs * onehot).sum(axes)
    fp = (probs * (1 - onehot)).sum(axes)
    fn = ((1 - probs) * onehot).sum(axes)
    return tp, fp, fn


def _weights(weight) -> torch.Tensor | None:
    return None if weight is None else torch.as_tensor(weight, dtype=torch.float32)


class CrossEntropyLoss(nn.Module):
    """Mean voxel cross-entropy.

    weight: optional per-class weights (length C), e.g. to up-weight CSF; None = all 1.
    """

    def __init__(self, weight=None):
        super().__init__()
        self.register_buffer("weight", _weights(weight), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long(), weight=self.weight)


class TverskyLoss(nn.Module):
    """1 − mean over classes of TP / (TP + α·FP + β·FN), sums taken over the whole batch (MONAI's batch=True).

    alpha: weight of false positives. beta: weight of false negatives (β > α favours recall).
    include_background: count class 0 in the mean. smooth_nr / smooth_dr: added to numerator / denominator so an
    absent class that is also not predicted scores 1, not 0/0.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, include_background: bool = True,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5):
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.include_background = alpha, beta, include_background
        self.smooth_nr, self.smooth_dr = smooth_nr, smooth_dr

    def index(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The Tversky index of each class."""
        tp, fp, fn = _class_sums(logits, target, self.include_background)
        return (tp + self.smooth_nr) / (tp + self.alpha * fp + self.beta * fn + self.smooth_dr)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - self.index(logits, target).mean()


class DiceLoss(TverskyLoss):
    """Soft Dice: 1 − mean over classes of 2·TP / (2·TP + FP + FN) (= Tversky with α = β = 0.5).

    include_background, smooth_nr, smooth_dr: as for TverskyLoss.
    """

    def __init__(self, include_background: bool = True, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5):
        super().__init__(0.5, 0.5, include_background, smooth_nr, smooth_dr)


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky (Abraham & Khan 2019): mean over classes of (1 − TI)^γ.

    alpha, beta, include_background, smooth_nr, smooth_dr: as for TverskyLoss.
    gamma: focusing exponent; γ < 1 (default 0.75 = 1/(4/3), the paper's choice) raises the loss of classes that are
    already fairly well segmented less than that of poorly segmented ones.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, include_background: bool = True,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5):
        super().__init__(alpha, beta, include_background, smooth_nr, smooth_dr)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # clamp: the index can exceed 1 by the smoothing terms' rounding, and a negative base has no real power
        return (1 - self.index(logits, target)).clamp_min(0).pow(self.gamma).mean()


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): mean voxel −w_c·(1 − p_t)^γ·log p_t.

    gamma: focusing parameter (0 = cross-entropy). weight: optional per-class weights (the α_t of the paper).
    """

    def __init__(self, gamma: float = 2.0, weight=None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.register_buffer("weight", _weights(weight), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), 1).gather(1, target.long().unsqueeze(1)).squeeze(1)
        loss = -(1 - log_p.exp()).pow(self.gamma) * log_p
        if self.weight is not None:
            loss = loss * self.weight[target.long()]
        return loss.mean()


class DiceCELoss(nn.Module):
    """lambda_dice · soft Dice + lambda_ce · cross-entropy.

    weight: class weights of the cross-entropy term. include_background, smooth_nr, smooth_dr: as for DiceLoss.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, weight=None, include_background: bool = True,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5):
        super().__init__()
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice}, {lambda_ce}")
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.dice = DiceLoss(include_background, smooth_nr, smooth_dr)
        self.ce = CrossEntropyLoss(weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lambda_dice * self.dice(logits, target) + self.lambda_ce * self.ce(logits, target)


_CLASSES = {"ce": CrossEntropyLoss, "dice": DiceLoss, "dice_ce": DiceCELoss, "focal": FocalLoss,
            "tversky": TverskyLoss, "focal_tversky": FocalTverskyLoss}


def build_loss(name: str, **kwargs) -> nn.Module:
    """The loss called `name` (one of LOSSES); keyword arguments are checked against its constructor."""
    if name not in _CLASSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    cls = _CLASSES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"loss {name!r} takes no argument {', '.join(unknown)}; "
                         f"it accepts {', '.join(sorted(accepted))}")
    return cls(**kwargs)
