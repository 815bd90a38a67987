"""Train the demo network on the source task (digits 0-4) and write its shipped weights.

Usage:
    .venv/bin/python scripts/train_demo_source.py [--out src/frostline/data/demo_source.safetensors]

Deterministic: a fixed seed, deterministic algorithms and one CPU thread, so the same machine
writes the same file again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from frostline.demo._data import source_data
from frostline.demo._model import digit_net

SEED = 0
EPOCHS = 15
BATCH_SIZE = 32
LR = 3e-3
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src/frostline/data/demo_source.safetensors"


def train(seed: int = SEED, epochs: int = EPOCHS) -> tuple[nn.Module, float]:
    """The source network and its accuracy on held-out digits 0-4."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    (x, y), (x_val, y_val) = source_data()
    model = digit_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(y), generator=order).split(BATCH_SIZE):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    return model, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    model, accuracy = train()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata={"seed": str(SEED), "epochs": str(EPOCHS),
                                                "heldout_accuracy": f"{accuracy:.4f}"})
    print(f"held-out accuracy on digits 0-4: {accuracy:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
