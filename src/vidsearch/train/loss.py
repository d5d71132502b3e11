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
encoded). With t, v, f the batch's text, video and one-frame features, s = EXAMPLE_SCALE, and j ranging over the
batch's *other footage* (not video i itself, nor its time-reversed twin, which holds the same frames):

    a_ij     = m · t_i·t_j + (1 − m) · t̄_i·t̄_j             how alike captions i and j are (m = 1: t_i·t_j)
    target_i = softmax_j(s · a_ij)                          which other captions caption i finds alike
    vv       = H(target_i, softmax_j(s · v_i·v_j))         a video's neighbours are its caption's
    fv       = H(target_i, softmax_j(s · f_i·v_j))         so are a frame's, among the other videos
    loss     = (vv + fv) / 2                               (H: cross-entropy; targets carry no gradient)

t̄_i is the mean of the captions of video i's footage in the batch (its own and its time-reversed twin's),
renormalised: what the footage shows, whichever way it runs. `motion` m (`--example-motion`) weighs the two: at 1
(the default) a caption as it is, direction words and all; lower, videos showing the same thing moving another way
count as more alike than videos of other things moving the same way. Without twins in the batch t̄ = t.

Text–video InfoNCE alone ranks captions against videos but leaves video–video distances to whatever separates
instances (position, size, background): on the demo, fresh clips found their colour and shape about 65 % of the
time and single frames 11 %. Other footage only, because the nearest thing to a video (or to one of its frames) is
always its own footage, which teaches nothing about which *other* videos are alike: a query by example never finds
its own footage in the library. The scale (30, where InfoNCE's reaches 100) keeps the target graded: videos with
the caption's colour, shape and direction first, then those with its colour and shape.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0
EXAMPLE_SCALE = 30.0


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


def example_loss(text: torch.Tensor, video: torch.Tensor, frame: torch.Tensor, footage: torch.Tensor, *,
                 scale: float = EXAMPLE_SCALE, motion: float = 1.0) -> torch.Tensor:
    """The search-by-example term (module docstring). Features [n, D] normalised and `footage` [n] (equal for a
    video and its twin, distinct otherwise), gathered over ranks like `contrastive_loss`'s."""
    text, video, frame = (gather_with_grad(_at_least_fp32(x)) for x in (text, video, frame))
    footage = gather_ids(footage.to(video.device))
    own = footage[:, None] == footage[None, :]
    useful = ~own.all(dim=1)  # a row whose batch holds no other footage has no target
    if not bool(useful.any()):
        return video.sum() * 0.0
    with torch.no_grad():
        alike = caption_similarity(text.detach(), own, motion=motion)[useful]
    own, video_rows, frame_rows = own[useful], video[useful], frame[useful]
    with torch.no_grad():
        target = (scale * alike).masked_fill(own, float("-inf")).softmax(dim=1)

    def cross_entropy(logits: torch.Tensor) -> torch.Tensor:
        log_p = logits.masked_fill(own, float("-inf")).log_softmax(dim=1).masked_fill(own, 0.0)
        return -(target * log_p).sum(dim=1).mean()

    return (cross_entropy(scale * video_rows @ video.t()) + cross_entropy(scale * frame_rows @ video.t())) / 2


def caption_similarity(text: torch.Tensor, own: torch.Tensor, *, motion: float) -> torch.Tensor:
    """[n, n]: motion · tᵢ·tⱼ + (1 − motion) · t̄ᵢ·t̄ⱼ, where t̄ is the mean caption of a footage (a video's
    with its time-reversed twin's in the batch, renormalised: what the footage shows, whichever way it runs)."""
    if motion >= 1.0:
        return text @ text.t()
    members = own.to(text.dtype)
    shown = F.normalize(members @ text / members.sum(dim=1, keepdim=True), dim=1)
    return motion * (text @ text.t()) + (1.0 - motion) * (shown @ shown.t())


def gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """Concatenate integer ids [n] of all ranks in rank order (no gradient); identity alone."""
    if world_size() == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(world_size())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a batch in fp16/bf16 loses the small logits' gradients: compute the loss in fp32 (or fp64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
