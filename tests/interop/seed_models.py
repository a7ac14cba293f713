"""The seed's models as PyTorch modules, shared by the interop tests."""

import torch
from torch import nn


class MyModel(nn.Module):
    """The seed's CNN."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(20 * 12 * 12, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        return torch.relu(self.fc1(x.view(-1, 2880)))


class TiedLM(nn.Module):
    """An embedding tied to the output projection (pytorch-semantics.md section 9)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.lm_head = nn.Linear(4, 10, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, tokens):
        return torch.log_softmax(self.lm_head(self.embed(tokens)), dim=-1)
