"""Symmetric InfoNCE over a batch of (caption, video) pairs (CLIP, CLIP4Clip).

    logits = min(exp(logit_scale), 100) · text @ videoᵀ        [N, N], pair i is the diagonal
    loss   = (CE(logits, i) + CE(logitsᵀ, i)) / 2

Under `torchrun` every rank encodes its share of the global batch; the features of all ranks are gathered *here*,
with gradient (`torch.distributed.nn.functional.all_gather`), never inside the model. Every rank then computes the
whole global batch's loss. The gather's backward sums the gradient that each rank's copy of the loss sends to a
rank's own features (world × the single-process gradient), and DistributedDataParallel's averaging of parameter
gradients divides by world again: the result equals one process training on the whole batch.

`example_loss` is the search-by-example term (`--example-weight`): captions say which videos are alike, and the video
space learns to say it too, for a whole clip and for a single frame (the video tower at T = 1, as an image query is
encoded). With s the same clamped scale and t, v, f the batch's text, video and one-frame features,

    target = softmax_j(s · t_i·t_j)                            how alike caption i finds each caption j
    vv     = H(target without j = i, softmax_j≠i(s · v_i·v_j))   a video's neighbours follow its caption's
    fv     = H(target, softmax_j(s · f_i·v_j))                  a frame of video i lands where video i's caption points
    loss   = (vv + fv) / 2                                      (H: cross-entropy; targets carry no gradient)

Text–video InfoNCE alone ranks captions against videos but leaves video–video distances to whatever separates
instances (position, size, background): on the demo, fresh clips then found their colour and shape half the time.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate `features` [n, D] of all ranks in rank order, keeping the autograd graph; identity alone."""
    if world_size() == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features), dim=0)


def contrastive_loss(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of this rank's normalised features [n, D] against the whole (gathered) batch."""
    text, video = gather_with_grad(_at_least_fp32(text)), gather_with_grad(_at_least_fp32(video))
    scale = _at_least_fp32(logit_scale).exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * text @ video.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def example_loss(text: torch.Tensor, video: torch.Tensor, frame: torch.Tensor,
                 logit_scale: torch.Tensor) -> torch.Tensor:
    """The search-by-example term (module docstring): video↔video and frame↔video similarities follow caption↔caption
    ones. Features [n, D] normalised, gathered over ranks like `contrastive_loss`."""
    text, video, frame = (gather_with_grad(_at_least_fp32(x)) for x in (text, video, frame))
    scale = _at_least_fp32(logit_scale).exp().clamp(max=MAX_LOGIT_SCALE)
    with torch.no_grad():
        alike = scale.detach() * text.detach() @ text.detach().t()
        self_pair = torch.eye(alike.shape[0], dtype=torch.bool, device=alike.device)
        target_frame = alike.softmax(dim=1)
        target_video = alike.masked_fill(self_pair, float("-inf")).softmax(dim=1)
    video_logits = (scale * video @ video.t()).masked_fill(self_pair, float("-inf"))
    video_log_p = video_logits.log_softmax(dim=1).masked_fill(self_pair, 0.0)
    frame_log_p = (scale * frame @ video.t()).log_softmax(dim=1)
    video_term = -(target_video * video_log_p).sum(dim=1).mean()
    frame_term = -(target_frame * frame_log_p).sum(dim=1).mean()
    return (video_term + frame_term) / 2


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a batch in fp16/bf16 loses the small logits' gradients: compute the loss in fp32 (or fp64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
