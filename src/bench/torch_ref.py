# The bench's same-run PyTorch reference (src/bench/torch.ts runs it): the same training steps
# and kernel shapes as `deno task bench`, on random data, on this machine's CPU threads.
# Prints one JSON object. Shapes come from argv as JSON, so the bench and this script cannot
# drift apart: {"threads": 2, "train": [{"arch", "size", "batch", "reps"}],
#               "matmul": [n, ...], "conv": [{"name", "x", "w", "stride", "padding", "dilation"}]}
# (the geometry as [h, w] pairs).
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

cfg = json.loads(sys.argv[1])
torch.set_num_threads(int(cfg.get("threads", 2)))
torch.manual_seed(0)


def conv_bn(i, o, k, s=1, d=1):
    return [nn.Conv2d(i, o, k, s, d * (k - 1) // 2 if k > 1 else 0, dilation=d, bias=False),
            nn.BatchNorm2d(o)]


class Basic(nn.Module):
    """The project's basic block: 3x3-BN-ReLU-3x3-BN, 1x1-BN shortcut when the shape changes."""

    def __init__(self, i, o, s, d):
        super().__init__()
        self.main = nn.Sequential(*conv_bn(i, o, 3, s, d), nn.ReLU(inplace=True),
                                  *conv_bn(o, o, 3, 1, d))
        self.down = nn.Sequential(*conv_bn(i, o, 1, s)) if s != 1 or i != o else None

    def forward(self, x):
        return F.relu(self.main(x) + (self.down(x) if self.down is not None else x))


def tiny(os=16):
    """`tiny` (src/models/resnet.ts): 3x3/2 stem, one basic block per stage, 16-32-64-128."""
    widths, strides = [16, 32, 64, 128], [1, 2, 2, 2 if os == 16 else 1]
    dil = [1, 1, 1, 1 if os == 16 else 2]
    layers, c = [*conv_bn(3, 16, 3, 2), nn.ReLU(inplace=True)], 16
    for w, s, d in zip(widths, strides, dil):
        layers.append(Basic(c, w, s, d))
        c = w
    return nn.Sequential(*layers), c


def resnet50():
    import torchvision
    m = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True])
    return nn.Sequential(*list(m.children())[:-2]), 2048


def time_train(arch, size, batch, reps, classes=20):
    body, c = tiny() if arch == "tiny" else resnet50()
    net = nn.Sequential(body, nn.Conv2d(c, classes, 1, bias=False))
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size)
    tags = (torch.rand(batch, classes) < 0.1).float()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = net(x).mean((2, 3))
        F.multilabel_soft_margin_loss(logits, tags).backward()
        opt.step()

    step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    ms = times[len(times) // 2] * 1000
    return {"arch": arch, "size": size, "batch": batch, "ms": ms, "img_s": batch * 1000 / ms}


def best_ms(fn, reps=3):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "train": [],
       "matmul": [], "conv": []}
for t in cfg.get("train", []):
    out["train"].append(time_train(t["arch"], t["size"], t["batch"], t.get("reps", 3)))
for n in cfg.get("matmul", []):
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms = best_ms(lambda: a @ b)
    out["matmul"].append({"n": n, "ms": ms, "gflops": 2 * n ** 3 / ms / 1e6})
for c in cfg.get("conv", []):
    x = torch.randn(*c["x"], requires_grad=True)
    w = torch.randn(*c["w"], requires_grad=True)
    geo = {k: tuple(c[k]) for k in ("stride", "padding", "dilation")}
    y = F.conv2d(x, w, **geo)
    dy = torch.randn_like(y)
    flops = 2 * y.numel() * w.shape[1] * w.shape[2] * w.shape[3]
    row = {"name": c["name"]}
    with torch.no_grad():
        row["forward"] = flops / best_ms(lambda: F.conv2d(x, w, **geo)) / 1e6
    row["grad input"] = flops / best_ms(
        lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, **geo)) / 1e6
    row["grad weight"] = flops / best_ms(
        lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, **geo)) / 1e6
    out["conv"].append(row)
print(json.dumps(out))
