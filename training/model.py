"""The model: encoder -> (mu, log sigma^2), reparameterisation, decoder -> logits.

One class, :class:`VAE`, covers both the variational autoencoder (``kind="vae"``) and a
plain autoencoder with the same backbone (``kind="ae"``: z = mu, no sampling, no KL), and
two backbones: an MLP for any image size and a small conv net for 16x16 and larger.
The decoder returns **logits**; ``torch.sigmoid(logits)`` is the mean image.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.config import LOGVAR_MAX, LOGVAR_MIN, TrainConfig
from training.validate import arch_problem


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, hidden_layers: int):
        super().__init__()
        self.body = nn.Sequential(_mlp([input_dim] + [hidden_dim] * hidden_layers), nn.ReLU())
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))  # (B, hidden)


class MLPDecoder(nn.Module):
    def __init__(self, latent_dim: int, hidden_dim: int, hidden_layers: int,
                 image_shape: tuple[int, int, int]):
        super().__init__()
        self.image_shape = image_shape
        self.body = _mlp([latent_dim] + [hidden_dim] * hidden_layers + [math.prod(image_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z).view(-1, *self.image_shape)  # (B, C, H, W)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (H -> H/4) then a linear layer to ``hidden_dim``."""

    def __init__(self, image_shape: tuple[int, int, int], hidden_dim: int):
        super().__init__()
        channels, height, width = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),  # (B, 32, H/2, W/2)
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # (B, 64, H/4, W/4)
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), hidden_dim), nn.ReLU(),
        )
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, hidden)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder` with transposed convolutions."""

    def __init__(self, latent_dim: int, hidden_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        channels, height, width = image_shape
        self.grid = (64, height // 4, width // 4)
        self.to_grid = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, math.prod(self.grid)), nn.ReLU(),
        )
        self.body = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),  # (B, 32, H/2, W/2)
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),  # (B, C, H, W)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.to_grid(z).view(-1, *self.grid))  # (B, C, H, W)


def check_arch(arch: str, image_shape: tuple[int, int, int]) -> None:
    """Raise ValueError when ``arch`` cannot handle images of ``image_shape``."""
    problem = arch_problem(arch, image_shape)
    if problem:
        raise ValueError(problem)


class VAE(nn.Module):
    """Variational autoencoder (``kind="vae"``) or plain autoencoder (``kind="ae"``)."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 2,
                 hidden_dim: int = 512, hidden_layers: int = 2, arch: str = "mlp",
                 kind: str = "vae", learn_sigma: bool = False, gaussian_sigma: float = 0.1):
        super().__init__()
        check_arch(arch, image_shape)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.kind = kind
        if arch == "mlp":
            self.encoder: nn.Module = MLPEncoder(math.prod(image_shape), hidden_dim, hidden_layers)
            self.decoder: nn.Module = MLPDecoder(latent_dim, hidden_dim, hidden_layers, image_shape)
        else:
            self.encoder = ConvEncoder(image_shape, hidden_dim)
            self.decoder = ConvDecoder(latent_dim, hidden_dim, image_shape)
        self.to_mu = nn.Linear(self.encoder.out_dim, latent_dim)
        self.to_logvar = nn.Linear(self.encoder.out_dim, latent_dim) if kind == "vae" else None
        # Gaussian likelihood's log sigma: a parameter when learned, else a fixed buffer.
        log_sigma = torch.tensor(math.log(gaussian_sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @classmethod
    def from_config(cls, config: TrainConfig, image_shape: tuple[int, int, int]) -> VAE:
        return cls(image_shape=image_shape, latent_dim=config.latent_dim,
                   hidden_dim=config.hidden_dim, hidden_layers=config.hidden_layers,
                   arch=config.arch, kind=config.model, learn_sigma=config.learn_sigma,
                   gaussian_sigma=config.gaussian_sigma)

    @property
    def is_vae(self) -> bool:
        return self.to_logvar is not None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, C, H, W) -> mu (B, D), logvar (B, D) clamped to a safe range (None for an AE)."""
        h = self.encoder(x)  # (B, hidden)
        mu = self.to_mu(h)  # (B, D)
        if self.to_logvar is None:
            return mu, None
        logvar = self.to_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)  # (B, D)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I): the sample is a differentiable function
        of (mu, logvar), so gradients flow through it (Kingma & Welling 2014, section 2.4)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps  # (B, D)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> logits (B, C, H, W)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns (logits, mu, logvar). ``sample=False`` decodes the posterior mean."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator) if (sample and logvar is not None) else mu
        return self.decode(z), mu, logvar
