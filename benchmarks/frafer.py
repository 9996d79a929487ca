"""Images per second of the FRA-FER networks on this CPU: forward passes and training steps at 224, batch 8.

    .venv/bin/python benchmarks/frafer.py [--batch 8] [--size 224] [--repeats 3] [--threads N] [--dlib PATH]

Rows (each the median of --repeats timed runs after one untimed warm-up, random RGB faces in [0, 1]):

  frafer (dlib FR)     FRA-FER at p = q = 1 with dlib's ResNet as the frozen FR network (the offline default)
  frafer (B0 FR)       FRA-FER at p = q = 1 with an EfficientNet-B0 FR network, as the paper's (random weights
                       from a state dict written to a temporary folder: speed does not depend on them)
  frafer_b0            EfficientNet-B0 alone (Table III's "no FR fusion")
  FR alone             the frozen FR networks: their map p = 1 (what FRA-FER computes of them) and their
                       whole descriptor (what frafer_concat computes)

``forward``: eval mode under torch.no_grad (inference, feature extraction for AFEW); ``train step``: train
mode, forward, cross-entropy, backward and one Adam step (lr 3e-5, the paper's), as fer_pipeline.train does.
Writes a Markdown table to stdout. The machine may be shared: rerun to compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

from fer_pipeline.models import build_model  # noqa: E402
from fer_pipeline.train import make_optimizer  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_rate(model, batch, repeats: int) -> float:
    model.eval()

    def run():
        with torch.no_grad():
            model(batch)
    return batch["rgb"].shape[0] / timed(run, repeats)


def train_rate(model, batch, repeats: int) -> float:
    optimizer = make_optimizer(model, {"optimizer": "adam", "lr": 3e-5, "weight_decay": 0.0})
    model.train()

    def run():
        optimizer.zero_grad()
        F.cross_entropy(model(batch), batch["label"]).backward()
        optimizer.step()
    return batch["rgb"].shape[0] / timed(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--dlib", default=str(REPO / ".cache/fr-models/dlib_face_recognition_resnet_model_v1.dat"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = {"rgb": torch.rand(args.batch, 3, args.size, args.size), "label": torch.randint(0, 8, (args.batch,))}
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fr_b0 = Path(tmp) / "fr_b0.pt"
        torch.save(torchvision.models.efficientnet_b0(weights=None, num_classes=9131).state_dict(), fr_b0)
        networks = []
        if Path(args.dlib).is_file():
            networks.append(("frafer (dlib FR)", build_model("frafer", 8, fr_weights=args.dlib)))
        else:
            print(f"(no {args.dlib}: the dlib rows are left out; `make assets` fetches it)", file=sys.stderr)
        networks.append(("frafer (B0 FR)", build_model("frafer", 8, fr_network="efficientnet_b0",
                                                         fr_weights=str(fr_b0))))
        networks.append(("frafer_b0 (B0 alone)", build_model("frafer_b0", 8)))
        for name, model in networks:
            rows.append((name, forward_rate(model, batch, args.repeats), train_rate(model, batch, args.repeats)))
            if model.fr is not None:
                fr, rgb = model.fr, batch["rgb"]
                n = rgb.shape[0]
                stem = n / timed(lambda: fr.feature_map(rgb, model.fr_index), args.repeats)
                whole = n / timed(lambda: fr.descriptor(rgb), args.repeats)
                rows.append((f"FR alone: {fr.kind} map p = 1 ({fr.input_size} px)", stem, None))
                rows.append((f"FR alone: {fr.kind} whole descriptor ({fr.input_size} px)", whole, None))
    print(f"batch {args.batch}, {args.size} x {args.size} input, {torch.get_num_threads()} torch threads, "
          f"median of {args.repeats}; {time.perf_counter() - started:.0f} s in all\n")
    print("| network | forward, images/s | training step, images/s |")
    print("| --- | ---: | ---: |")
    for name, fwd, step in rows:
        print(f"| {name} | {fwd:.1f} | {'' if step is None else f'{step:.1f}'} |")


if __name__ == "__main__":
    main()
