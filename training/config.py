"""The one training configuration: a dataclass saved verbatim as ``config.json["config"]``.

Everything needed to rebuild the model and to reproduce a run lives here; the run
directory stores it next to the data description (image shape, class names) and the
library versions, so the app can rebuild the exact model without guessing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

DATASETS = ("mnist5k", "digits", "mnist", "fashion-mnist", "kmnist")  # plus "folder:PATH"
ARCHS = ("mlp", "conv")
MODELS = ("vae", "ae")
LIKELIHOODS = ("bernoulli", "gaussian")
DEVICES = ("auto", "cpu", "cuda", "mps")
# The encoder's log sigma^2 is clamped to this range (sigma in [2.5e-3, 55]): keeps exp()
# finite and gradients sane. Here, not in model.py, so the app's NumPy model shares it.
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0

# Upper bounds of a run (inclusive). A run beyond them is refused by the trainer (here) and
# by every reader of a run folder (training/validate.py), so the trainer never writes a run
# the explorer cannot open. training/validate.py lists the caps on files and data.
MAX_LATENT_DIM = 256  # the explorer draws one slider per dimension (about 20 ms each)
MAX_HIDDEN_DIM = 8192
MAX_HIDDEN_LAYERS = 16
MAX_EPOCHS = 10_000  # also bounds kl_warmup and the rows of metrics.jsonl
MAX_BATCH_SIZE = 65_536
MAX_IMAGE_SIDE = 512  # pixels per side of an image (folder data sets are resized to it)
MAX_THREADS = 1024


@dataclass
class TrainConfig:
    """All options of a training run. Defaults train the demo model in well under a minute."""

    # --- data ---
    dataset: str = "mnist5k"  # mnist5k | digits | mnist | fashion-mnist | kmnist | folder:PATH
    data_dir: str = "data"  # where torchvision data sets are looked for (and downloaded to)
    download: bool = False  # never touch the network unless the user asks
    image_size: int = 28  # folder: data sets are resized to image_size x image_size
    channels: int = 1  # folder: data sets are converted to 1 (grayscale) or 3 (RGB) channels
    split_seed: int = 0  # fixed so every run on a data set shares the same train/test split
    test_fraction: float = 0.2  # digits / folder: share held out (mnist5k is 4,000/1,000 by design)

    # --- model ---
    model: str = "vae"  # vae | ae (plain autoencoder, same backbone, no sampling, no KL)
    arch: str = "mlp"  # mlp | conv (conv needs images of at least 16x16, sides divisible by 4)
    latent_dim: int = 2  # 2 for the demo: the latent map needs no projection
    # Hidden layers of the MLP encoder (the decoder mirrors them) and their width.
    # 0 = auto, chosen by latent_dim from comparisons on mnist5k (test -ELBO, active units):
    #   latent_dim <= 2: 2 layers of 512. A 2-D code needs a deeper decoder to unfold it into
    #     images; one layer of 512 ends with a clearly worse test -ELBO.
    #   latent_dim > 2: 1 layer of 1024. Deeper decoders let about half of 20 dimensions
    #     collapse, where one wide layer keeps them all active (and a better -ELBO).
    hidden_dim: int = 0
    hidden_layers: int = 0
    likelihood: str = "bernoulli"  # bernoulli (BCE on logits) | gaussian (squared error)
    gaussian_sigma: float = 0.1  # fixed pixel std of the gaussian likelihood ...
    learn_sigma: bool = False  # ... or learn one shared log-sigma instead

    # --- objective ---
    beta: float = 1.0  # weight on the KL term (beta-VAE); 1.0 is the true ELBO
    kl_warmup: int = 0  # epochs over which beta ramps linearly from 0 to its value
    free_bits: float = 0.0  # per-dimension KL floor in nats (Kingma et al. 2016); 0 = off

    # --- optimisation ---
    # Schedule chosen by the sweep in bench/training_speed.py (issue 17): a high peak lr
    # after a one-epoch linear warm-up, cosine decay to lr / 10, and few epochs. 0 = auto:
    #   latent_dim <= 2: 8 epochs (test -ELBO ~155.7 nats on mnist5k; the old 40 epochs at
    #     lr 2e-3 gave 149.9, and 8 of them at 2e-3 only 163);
    #   latent_dim > 2: 12 epochs (the 1 x 1024 network needs more updates to pass 115).
    epochs: int = 0
    batch_size: int = 64  # smaller than the usual 128: more updates per second on a small set
    lr: float = 5e-3
    lr_final_fraction: float = 0.1  # cosine decay of lr down to lr * this by the last epoch
    # epochs of linear lr warm-up from lr * lr_final_fraction to lr (at most half the run)
    lr_warmup: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # torch intra-op threads on the CPU; 0 = all physical cores

    # --- outputs ---
    tsne: bool = True  # cache a t-SNE of the test latents when latent_dim > 2
    tsne_perplexity: float = 30.0

    def __post_init__(self) -> None:
        if self.hidden_layers == 0:
            self.hidden_layers = 2 if self.latent_dim <= 2 else 1
        if self.hidden_dim == 0:
            self.hidden_dim = 512 if self.hidden_layers >= 2 else 1024
        if self.epochs == 0:
            self.epochs = 8 if self.latent_dim <= 2 else 12

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from a saved dict; unknown keys are an error, missing keys take defaults
        (older run directories predate newer options)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    def validate(self, imported: bool = False) -> None:
        """Raise ValueError with a specific message for any impossible setting.
        ``imported``: the config of a run made by ``explorer/adopt.py`` from someone else's
        model: its ``dataset`` only names where the images came from, and there is no
        architecture of this project whose size could be checked."""
        problems: list[str] = []
        if imported:
            if not self.dataset:
                problems.append("an imported run's dataset must name its images")
        elif self.dataset not in DATASETS and not self.dataset.startswith("folder:"):
            problems.append(
                f"unknown dataset {self.dataset!r}; choose one of "
                f"{', '.join(DATASETS)} or folder:PATH"
            )
        if self.dataset.startswith("folder:") and not self.dataset[len("folder:"):]:
            problems.append("folder: needs a path, as in folder:./my_images")
        if self.model not in MODELS:
            problems.append(f"model must be one of {MODELS}, got {self.model!r}")
        if self.arch not in ARCHS:
            problems.append(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.likelihood not in LIKELIHOODS:
            problems.append(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {DEVICES}, got {self.device!r}")
        positive_ints = {
            "latent_dim": self.latent_dim, "hidden_dim": self.hidden_dim,
            "hidden_layers": self.hidden_layers, "epochs": self.epochs,
            "batch_size": self.batch_size, "image_size": self.image_size,
        }
        for name, value in positive_ints.items():
            if value < 1:
                problems.append(f"{name.replace('_', '-')} must be at least 1, got {value}")
        upper = {"latent_dim": MAX_LATENT_DIM, "hidden_dim": MAX_HIDDEN_DIM,
                 "hidden_layers": MAX_HIDDEN_LAYERS, "epochs": MAX_EPOCHS,
                 "batch_size": MAX_BATCH_SIZE, "image_size": MAX_IMAGE_SIDE,
                 "kl_warmup": MAX_EPOCHS, "threads": MAX_THREADS}
        for name, limit in upper.items():
            value = getattr(self, name)
            if value > limit:
                why = (f" (the explorer shows at most {limit} latent dimensions)"
                       if name == "latent_dim" else "")
                problems.append(f"{name.replace('_', '-')} must be at most {limit}{why}, "
                                f"got {value}")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels}")
        for name, number in {"lr": self.lr, "gaussian-sigma": self.gaussian_sigma}.items():
            if not number > 0:
                problems.append(f"{name} must be positive, got {number}")
        for name, number in {"beta": self.beta, "free-bits": self.free_bits,
                             "weight-decay": self.weight_decay}.items():
            if not number >= 0:
                problems.append(f"{name} must be zero or positive, got {number}")
        if self.kl_warmup < 0:
            problems.append(f"kl-warmup must be zero or positive, got {self.kl_warmup}")
        if not 0 < self.test_fraction < 1:
            problems.append(f"test-fraction must be between 0 and 1, got {self.test_fraction}")
        if not 0 < self.lr_final_fraction <= 1:
            problems.append(f"lr-final-fraction must be in (0, 1], got {self.lr_final_fraction}")
        if not 0 <= self.lr_warmup <= MAX_EPOCHS:
            problems.append(f"lr-warmup must be between 0 and {MAX_EPOCHS} epochs, "
                            f"got {self.lr_warmup}")
        if self.threads < 0:
            problems.append(f"threads must be zero or positive, got {self.threads}")
        if not self.tsne_perplexity > 0:
            problems.append(f"tsne-perplexity must be positive, got {self.tsne_perplexity}")
        if not problems and not imported:  # the model's size, by formula: nothing allocated
            from training.validate import model_size_problem

            size = model_size_problem(self)
            if size:
                problems.append(size)
        if problems:
            raise ValueError("; ".join(problems))


__all__ = ["TrainConfig", "DATASETS", "ARCHS", "MODELS", "LIKELIHOODS", "DEVICES",
           "MAX_LATENT_DIM", "MAX_HIDDEN_DIM", "MAX_HIDDEN_LAYERS", "MAX_EPOCHS",
           "MAX_BATCH_SIZE", "MAX_IMAGE_SIDE", "MAX_THREADS"]
