import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vidsearch.train.loss import contrastive_loss

WORKER = Path(__file__).with_name("ddp_loss_worker.py")
RUN_TIMEOUT_S = 600  # generous: three processes import torch on a machine that may be busy


def test_loss_is_symmetric_cross_entropy_over_scaled_similarities():
    torch.manual_seed(0)
    text, video = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(math.log(20.0))
    logits = 20.0 * text @ video.t()
    expected = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))) / 2
    torch.testing.assert_close(contrastive_loss(text, video, scale), expected)


def test_logit_scale_is_clamped_at_100():
    text = video = torch.eye(3)
    big, hundred = contrastive_loss(text, video, torch.tensor(10.0)), contrastive_loss(text, video, torch.tensor(math.log(100)))
    torch.testing.assert_close(big, hundred)


def test_half_precision_features_give_a_float32_loss():
    text = video = torch.eye(3, dtype=torch.bfloat16)
    assert contrastive_loss(text, video, torch.tensor(1.0)).dtype == torch.float32


def test_two_gloo_ranks_give_the_loss_and_gradients_of_one_process(tmp_path, torchrun):
    single, double, logs = tmp_path / "single.safetensors", tmp_path / "ddp.safetensors", tmp_path / "logs"
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, timeout=RUN_TIMEOUT_S)
    # Each rank's own output goes to its file under `logs` (torchrun's stderr only says which rank failed).
    try:
        ranks = torchrun(2, "--log-dir", str(logs), "--redirects", "3", str(WORKER), str(double),
                         timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"two gloo ranks did not finish in {RUN_TIMEOUT_S} s\n{_rank_outputs(logs)}")
    assert ranks.returncode == 0, f"{ranks.stderr[-1500:]}\n{_rank_outputs(logs)}"
    one, two = load_file(str(single)), load_file(str(double))
    assert one.keys() == two.keys() and len(one) == 6
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-12, atol=1e-12, msg=key)
    assert one["grad.logit_scale"].abs() > 0


def _rank_outputs(logs: Path) -> str:
    """The end of every rank's (non-empty) stdout and stderr, as torchrun --redirects wrote them."""
    files = [path for path in sorted(logs.glob("**/std*.log")) if path.stat().st_size]
    return "\n".join(f"--- {path.relative_to(logs)}:\n{path.read_text(errors='replace')[-3000:]}" for path in files) \
        or f"no rank output under {logs}"
