"""The reference: the PyTorch VAE example (github.com/pytorch/examples, ``vae/main.py``),
written the way it is written there, on the same in-memory tensors as the project.

784-400-20 MLP with sigmoid outputs, ``binary_cross_entropy(reduction="sum")`` + closed-form
KL, Adam lr 1e-3, a ``DataLoader`` (batch 128, shuffled) over a ``Dataset`` of tensors
(per-sample ``__getitem__`` and collation, as the example does with MNIST), ``loss.item()``
every batch, and the example's ``test()`` (one posterior sample per image, summed loss
divided by the number of images: nats per sample, like the project's test -ELBO).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH_SIZE = 128
LR = 1e-3


class ExampleVAE(nn.Module):
    """The example's model, layer for layer."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 400, latent_dim: int = 20):
        super().__init__()
        self.input_dim = input_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))  # (B, 400)
        return self.fc21(h1), self.fc22(h1)  # (B, 20) each

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std  # (B, 20)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))  # (B, 400)
        return torch.sigmoid(self.fc4(h3))  # (B, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, self.input_dim))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor,
                  logvar: torch.Tensor) -> torch.Tensor:
    """Reconstruction + KL summed over the batch (the example's ``loss_function``)."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[1]), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def make_loader(train_x: torch.Tensor, train_y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(train_x, train_y), batch_size=BATCH_SIZE, shuffle=True)


def make(train_x: torch.Tensor, train_y: torch.Tensor, device: torch.device | str = "cpu",
         seed: int = 0) -> tuple[ExampleVAE, torch.optim.Optimizer, DataLoader]:
    torch.manual_seed(seed)
    model = ExampleVAE(input_dim=train_x[0].numel()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    return model, optimizer, make_loader(train_x, train_y)


def train_epoch(model: ExampleVAE, optimizer: torch.optim.Optimizer, loader: DataLoader,
                device: torch.device | str = "cpu") -> float:
    """The example's ``train(epoch)`` without its printing. Returns nats per sample."""
    model.train()
    train_loss = 0.0
    for data, _ in loader:
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    return train_loss / len(loader.dataset)


@torch.no_grad()
def test_loss(model: ExampleVAE, test_x: torch.Tensor, device: torch.device | str = "cpu"
              ) -> float:
    """The example's ``test(epoch)``: negative ELBO in nats per test image."""
    model.eval()
    total = 0.0
    loader = DataLoader(TensorDataset(test_x), batch_size=BATCH_SIZE, shuffle=False)
    for (data,) in loader:
        data = data.to(device)
        recon_batch, mu, logvar = model(data)
        total += loss_function(recon_batch, data, mu, logvar).item()
    return total / len(test_x)
