"""A model made to break at int8 (the int8 accuracy budget tests): a small MLP on digits whose
``fc1`` has one output channel scaled up 2000x and ``fc2`` the matching input column scaled
down, so the float function is unchanged but a per-tensor int8 scale for that activation wipes
out every other channel."""

from pathlib import Path

import torch
from torch import nn

OUTLIER = 2000.0


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.head(torch.relu(self.fc2(x)))


class RowMlp(nn.Module):
    """The same on the image's 8 rows as a sequence: fc1 and fc2 act on 3-D tensors, so they
    export as MatMul (which ONNX Runtime's dynamic int8 quantizes; its Gemm it leaves float)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 64)
        self.fc2 = nn.Linear(64, 32)
        self.head = nn.Linear(8 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        x = torch.relu(self.fc1(x.flatten(1, 2)))
        return self.head(torch.relu(self.fc2(x)).flatten(1))


def build_mlp() -> nn.Module:
    return Mlp()


def build_row_mlp() -> nn.Module:
    return RowMlp()


def fragile_weights(data, dest: Path, steps: int = 100, build=build_mlp) -> Path:
    """Train ``build()`` (an :class:`Mlp` or :class:`RowMlp`) briefly on ``data`` (a
    DataBundle, image view), make its fc1 -> fc2 activation an outlier range and save the state
    dict as .safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y).long()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        model.fc1.weight[3] *= OUTLIER
        model.fc1.bias[3] *= OUTLIER
        model.fc2.weight[:, 3] /= OUTLIER
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest))
    return dest
