"""DINO: self-distillation with no labels (Caron et al., "Emerging Properties in Self-Supervised
Vision Transformers", 2021), the joint-embedding baseline of the SplitMask paper's Table 1.

A student (ViT + projection head) sees every crop of an image (2 global, several local); an EMA
teacher (same architecture, no gradient) sees only the global crops. The student's softmax at
temperature 0.1 is trained to match the teacher's centred, sharpened softmax (temperature 0.04 or
a warm-up to 0.07) of every *other* crop; the loss is the cross-entropy averaged over the
(teacher global view, student view) pairs with different crops. Centring (an EMA of the teacher's
batch mean, momentum 0.9) and sharpening together keep the teacher from collapsing.

Layout: ``self.encoder`` is the *teacher's* backbone (what DINO evaluates and what
``PretrainTask`` exports, and what the ``encoder.*`` keys of a checkpoint hold);
``self.student_encoder`` / ``self.student_head`` are trained, ``self.teacher_head`` follows. The
teacher's parameters have ``requires_grad=False`` (no optimizer state, no DDP sync); the teacher,
the centre and the teacher temperature are in ``state_dict``, so a checkpoint resumes exactly.

Per-update schedules run from the trainer's hooks: :meth:`DINO.before_update` (weight decay of
the decayed groups, last layer frozen during the first epoch(s)) and :meth:`DINO.after_update`
(teacher EMA, next step's teacher temperature).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from fvcore.common.param_scheduler import CosineParamScheduler
from timm.layers import DropPath
from torch.nn.utils.parametrizations import weight_norm

from engine.distributed import all_reduce_sum, get_world_size
from ssl_backbones.vit import VisionTransformer


class DINOHead(nn.Module):
    """3-layer MLP (GELU) -> L2-normalised bottleneck -> weight-normalised prototypes (g fixed at 1).

    Args:
        in_dim: backbone width; out_dim: prototypes K (65,536 in the paper);
        hidden_dim, bottleneck_dim: 2048 and 256 in the paper.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0  # (K, 1) norms of the prototypes
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(False)  # unit-norm prototypes: logits are cosines

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> logits (N, K), each a cosine in [-1, 1]."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def dino_cross_entropy(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """Mean cross-entropy over (teacher view t, student view v) pairs with t != v.

    Args:
        student_logits: (V, B, K) head outputs of every view (globals first, in the teacher's order).
        teacher_probs: (T, B, K) centred, sharpened teacher softmax of the T global views.
        student_temp: student temperature.
    Returns:
        0-dim: sum over pairs of mean_b(-sum_k q log p) divided by the number of pairs (T * V - T).
    """
    T, B, K = teacher_probs.shape
    V = student_logits.shape[0]
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    # All T x V pair terms in one matmul over (batch, prototype); then drop the same-crop pairs.
    cross = -(teacher_probs.reshape(T, B * K) @ log_p.reshape(V, B * K).T) / B  # (T, V)
    same = torch.eye(T, V, dtype=torch.bool, device=cross.device)
    return cross.masked_fill(same, 0.0).sum() / (T * V - min(T, V))


def cosine_value(start: float, end: float, step: int, total_steps: int) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (step ``total_steps``), as DINO's schedules."""
    return float(CosineParamScheduler(start, end)(min(max(step, 0), total_steps) / total_steps))


class DINO(nn.Module):
    """DINO around a ViT (the student's backbone; the teacher starts as its copy).

    Args:
        encoder: the student's ViT (its copy becomes the teacher, without drop path).
        out_dim, hidden_dim, bottleneck_dim: the head.
        student_temp, teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs: sharpening.
        center_momentum: EMA momentum of the centre.
        momentum_teacher: teacher EMA momentum at step 0 (cosine to 1 at the end).
        weight_decay, weight_decay_end: cosine weight-decay schedule of the decayed groups.
        freeze_last_layer_epochs: epochs in which the student's prototypes get no update.

    Batch: ``{"global_crops": (B, G, 3, H, W), "local_crops": (B, L, 3, h, w)}`` (L may be 0).
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        center_momentum: float = 0.9,
        momentum_teacher: float = 0.996,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        freeze_last_layer_epochs: int = 1,
    ) -> None:
        super().__init__()
        self.student_encoder = encoder
        self.student_head = DINOHead(encoder.embed_dim, out_dim, hidden_dim, bottleneck_dim)
        self.encoder = copy.deepcopy(encoder)  # the teacher's backbone (exported)
        self.teacher_head = copy.deepcopy(self.student_head)
        for m in self.encoder.modules():
            if isinstance(m, DropPath):
                m.drop_prob = 0.0  # the teacher runs without stochastic depth (and draws no RNG)
        for p in self.teacher_parameters():
            p.requires_grad_(False)
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        self.momentum_teacher = momentum_teacher
        self.weight_decay = weight_decay
        self.weight_decay_end = weight_decay_end
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.register_buffer("center", torch.zeros(1, out_dim))
        # The temperature of the next forward (set by after_update), so a resumed run has it.
        self.register_buffer(
            "temp", torch.tensor(float(warmup_teacher_temp if warmup_teacher_temp_epochs else teacher_temp))
        )

    # ---------------------------------------------------------------- parameters
    def student_parameters(self) -> list[nn.Parameter]:
        return [*self.student_encoder.parameters(), *self.student_head.parameters()]

    def teacher_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.teacher_head.parameters()]

    @torch.no_grad()
    def on_encoder_loaded(self) -> None:
        """After weights were loaded into ``self.encoder`` (``--init``): the student starts from them too."""
        self.student_encoder.load_state_dict(self.encoder.state_dict())

    # ---------------------------------------------------------------- forward
    def _student_logits(self, global_crops: torch.Tensor, local_crops: torch.Tensor) -> torch.Tensor:
        """(V, B, K): one backbone pass per resolution (globals, then locals), one head pass."""
        B = global_crops.shape[0]
        feats = [self.student_encoder(global_crops.transpose(0, 1).flatten(0, 1))]  # view-major
        if local_crops.shape[1] > 0:
            feats.append(self.student_encoder(local_crops.transpose(0, 1).flatten(0, 1)))
        return self.student_head(torch.cat(feats)).unflatten(0, (-1, B))

    @torch.no_grad()
    def _teacher_logits(self, global_crops: torch.Tensor) -> torch.Tensor:
        """(G, B, K) teacher head outputs of the global crops."""
        B = global_crops.shape[0]
        return self.teacher_head(self.encoder(global_crops.transpose(0, 1).flatten(0, 1))).unflatten(
            0, (-1, B)
        )

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of the teacher logits over every view and process.

        Args:
            teacher_logits: (G, B, K) this process's teacher outputs.
        """
        flat = teacher_logits.float().flatten(0, 1)
        batch_sum = all_reduce_sum(flat.sum(dim=0, keepdim=True))
        batch_center = batch_sum / (flat.shape[0] * get_world_size())
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        global_crops, local_crops = batch["global_crops"], batch["local_crops"]
        student = self._student_logits(global_crops, local_crops)  # (V, B, K)
        teacher = self._teacher_logits(global_crops).float()  # (G, B, K)
        with torch.no_grad():
            probs = F.softmax((teacher - self.center) / self.temp, dim=-1)
        loss = dino_cross_entropy(student, probs, self.student_temp)
        self.update_center(teacher)  # after the loss used the old centre, as DINO does
        with torch.no_grad():
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
            mean_probs = probs.flatten(0, 1).mean(0)
            batch_entropy = -(mean_probs * torch.log(mean_probs.clamp_min(1e-12))).sum()
        return {
            "loss": loss,
            "teacher_entropy": entropy,  # -> 0: one-hot collapse; stays at log K: uniform collapse
            "teacher_batch_entropy": batch_entropy,  # entropy of the mean teacher distribution
            "teacher_temp": self.temp.detach().clone(),
        }

    # ---------------------------------------------------------------- per-update schedules
    def teacher_momentum_at(self, step: int, total_steps: int) -> float:
        return cosine_value(self.momentum_teacher, 1.0, step, total_steps)

    def weight_decay_at(self, step: int, total_steps: int) -> float:
        return cosine_value(self.weight_decay, self.weight_decay_end, step, total_steps)

    def teacher_temp_at(self, step: int, steps_per_epoch: int) -> float:
        """Linear warm-up per epoch (DINO's np.linspace over the warm-up epochs), then constant."""
        epoch, warm = step // steps_per_epoch, self.warmup_teacher_temp_epochs
        if epoch >= warm:
            return self.teacher_temp
        if warm == 1:
            return self.warmup_teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * epoch / (warm - 1)

    def before_update(
        self, step: int, total_steps: int, steps_per_epoch: int, optimizer: torch.optim.Optimizer
    ) -> None:
        """Grads are unscaled, not yet clipped: freeze the prototypes early, set this step's decay."""
        if step < self.freeze_last_layer_epochs * steps_per_epoch:
            for p in self.student_head.last_layer.parameters():
                p.grad = None  # AdamW skips the parameter this step (no decay either), as in DINO
        wd = self.weight_decay_at(step, total_steps)
        for group in optimizer.param_groups:
            # Groups built with a decay (>= 2-D weights) follow the schedule; biases / norms stay at 0.
            if group.setdefault("decayed", group["weight_decay"] > 0):
                group["weight_decay"] = wd

    @torch.no_grad()
    def after_update(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        """teacher <- m * teacher + (1 - m) * student, m cosine 0.996 -> 1; next step's temperature."""
        m = self.teacher_momentum_at(step, total_steps)
        # Only what the student trains: fixed tensors (sin-cos table, prototype norms g = 1) stay exact.
        pairs = [
            (t, s) for t, s in zip(self.teacher_parameters(), self.student_parameters()) if s.requires_grad
        ]
        teacher, student = [t for t, _ in pairs], [s for _, s in pairs]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, student, alpha=1 - m)
        self.temp.fill_(self.teacher_temp_at(step + 1, steps_per_epoch))
