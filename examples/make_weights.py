"""Write the bundled example weights (seeded, so the files are reproducible): python examples/make_weights.py"""

from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent


def main() -> None:
    """Build TinyCNN with a fixed seed, give its batch norms non-trivial statistics, save tiny_cnn.safetensors."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_cnn", HERE / "tiny_cnn" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.TinyCNN()
    model.train()
    with torch.no_grad():
        for _ in range(4):  # a few forward passes in train mode give the batch norms real running statistics
            model(torch.randn(8, 3, 64, 64))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(HERE / "tiny_cnn" / "tiny_cnn.safetensors"))


if __name__ == "__main__":
    main()
