"""The PyTorch peer of bench/forward_bench (CPU) and bench/gpu_bench (CUDA): eager forwards
of the same models on the same inputs, measured the way the benchmarks measure paramd (best
of REPS timed calls after one warm-up call, under torch.no_grad(); on a GPU the model and
input are on the device first and each call ends with torch.cuda.synchronize()).

    forward_peers.py DIR REPS THREADS [DEVICE]      (DEVICE: cpu, the default, or cuda:N)

DIR holds the inputs the benchmark wrote (the cases whose file is missing are left out), raw
little-endian float32 in C order:
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
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    try:
        import numpy as np
        import torch
        from torch import nn
    except ImportError as error:
        print(json.dumps({"skipped": str(error)}))
        return
    torch.set_num_threads(threads)
    on_gpu = device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        print(json.dumps({"skipped": "this torch sees no GPU"}))
        return
    # float32 in full float32 on the GPU too, as paramd computes it (no TF32).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def finish():
        if on_gpu:
            torch.cuda.synchronize()

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
        return torch.from_numpy(data.reshape(shape).copy()).to(device)

    def best(model, x, count):
        model.to(device).eval()
        with torch.no_grad():
            model(x)
            finish()
            times = []
            for _ in range(count):
                start = time.perf_counter()
                model(x)
                finish()
                times.append(time.perf_counter() - start)
        return min(times)

    mlp = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))
    cnn = CNN()
    small_reps = reps * 20
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device}

    def has(name):
        return os.path.exists(os.path.join(directory, name))

    if has("mlp1.bin"):
        result["mlp1"] = best(mlp, load("mlp1.bin", (1, 1)), small_reps)
    if has("mlp64.bin"):
        result["mlp64"] = best(mlp, load("mlp64.bin", (64, 1)), small_reps)
    if has("cnn1.bin"):
        result["cnn1"] = best(cnn, load("cnn1.bin", (1, 1, 28, 28)), small_reps)
    if has("cnn64.bin"):
        result["cnn64"] = best(cnn, load("cnn64.bin", (64, 1, 28, 28)), small_reps)
    if has("large.bin"):
        width = os.path.getsize(os.path.join(directory, "large.bin")) // 4 // 64
        layers = []
        for _ in range(4):
            layers += [nn.Linear(width, width), nn.ReLU()]
        result["large"] = best(nn.Sequential(*layers), load("large.bin", (64, width)), reps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
