"""The PyTorch peer of bench/forward_bench: CPU eager forwards of the same models on the
same inputs, measured the way forward_bench measures paramd (best of REPS timed calls
after one warm-up call, under torch.no_grad()).

    forward_peers.py DIR REPS THREADS

DIR holds the inputs forward_bench wrote, raw little-endian float32 in C order:
mlp1.bin (1, 1), mlp64.bin (64, 1), cnn1.bin (1, 1, 28, 28), cnn64.bin (64, 1, 28, 28),
large.bin (64, WIDTH) where WIDTH = size / (64 * 4 bytes); models are built with torch's default
initialisation (the timing does not depend on the weights' values). torch runs with
torch.set_num_threads(THREADS), matching paramd's BLAS threads. Prints one line of JSON:
seconds per forward by case, or {"skipped": why} without torch.
"""

import json
import os
import sys
import time


def main():
    directory, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        import numpy as np
        import torch
        from torch import nn
    except ImportError as error:
        print(json.dumps({"skipped": str(error)}))
        return
    torch.set_num_threads(threads)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 20, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc1 = nn.Linear(2880, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv1(x)))
            return torch.relu(self.fc1(x.view(-1, 2880)))

    def load(name, shape):
        data = np.fromfile(os.path.join(directory, name), dtype="<f4")
        return torch.from_numpy(data.reshape(shape).copy())

    def best(model, x, count):
        model.eval()
        with torch.no_grad():
            model(x)
            times = []
            for _ in range(count):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        return min(times)

    mlp = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))
    cnn = CNN()
    small_reps = reps * 20
    large_numel = os.path.getsize(os.path.join(directory, "large.bin")) // 4
    width = large_numel // 64
    layers = []
    for _ in range(4):
        layers += [nn.Linear(width, width), nn.ReLU()]
    large = nn.Sequential(*layers)
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mlp1": best(mlp, load("mlp1.bin", (1, 1)), small_reps),
        "mlp64": best(mlp, load("mlp64.bin", (64, 1)), small_reps),
        "cnn1": best(cnn, load("cnn1.bin", (1, 1, 28, 28)), small_reps),
        "cnn64": best(cnn, load("cnn64.bin", (64, 1, 28, 28)), small_reps),
        "large": best(large, load("large.bin", (64, width)), reps),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
