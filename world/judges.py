"""Ground-truth judges of the offline world: two small CNNs, one naming the action, one the subject.

They are the test's instrument: methods never see them. Trained on renders with noise / blur / colour
augmentation, so generation artifacts do not fool them; a prediction whose probability is below
`min_confidence` is an abstention and counts as wrong.

Train (deterministic from the config and seed; writes weights, config and report to the weights folder):
    python -m world.judges [key=value ...]      e.g. train_images=20000 epochs=4
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from actionbench.cli import command
from actionbench.files import write_atomic
from world import WEIGHTS
from world.render import ACTIONS, SUBJECTS, random_dataset

KINDS = {"action": [a.name for a in ACTIONS], "subject": [s.name for s in SUBJECTS]}


class JudgeNet(nn.Module):
    """A VGG-style CNN for 32 px renders (about 0.3 M parameters)."""

    def __init__(self, num_classes: int):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *block(3, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.MaxPool2d(2), *block(128, 128),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, num_classes),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """`pixels`: (n, 3, 32, 32) floats in [0, 1]; returns logits."""
        return self.net((pixels - 0.5) / 0.25)


def to_pixels(images: np.ndarray | list) -> torch.Tensor:
    """uint8 (n, h, w, 3) array or PIL images -> float (n, 3, 32, 32) in [0, 1], resized if needed."""
    if not isinstance(images, np.ndarray):
        images = np.stack([np.asarray(im.convert("RGB").resize((32, 32))) for im in images])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


@dataclass
class Judge:
    kind: str  # action | subject
    classes: list[str]
    net: JudgeNet

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, device: torch.device = torch.device("cpu"),
                batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class index and its probability for each image."""
        self.net.to(device).eval()
        probs = torch.cat([F.softmax(self.net(chunk.to(device)), -1).cpu() for chunk in pixels.split(batch_size)])
        confidence, label = probs.max(-1)
        return label, confidence

    def save(self, folder: Path) -> Path:
        path = Path(folder) / f"judge_{self.kind}.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        write_atomic(path, save(state, metadata={"kind": self.kind, "classes": json.dumps(self.classes)}))
        return path

    @classmethod
    def load(cls, kind: str, folder: Path = WEIGHTS) -> "Judge":
        from safetensors import safe_open

        path = Path(folder) / f"judge_{kind}.safetensors"
        with safe_open(str(path), "pt") as handle:
            classes = json.loads(handle.metadata()["classes"])
        net = JudgeNet(len(classes))
        net.load_state_dict(load_file(str(path)))
        return cls(kind, classes, net.eval())


@dataclass
class JudgeTraining:
    seed: int = 0
    train_images: int = 40000
    test_images: int = 4000
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    noise_max: float = 0.08  # per-image Gaussian pixel noise, sigma drawn from [0, noise_max]
    blur_p: float = 0.3  # probability of a 3x3 blur
    colour_jitter: float = 0.08  # per-channel gain drawn from [1 - x, 1 + x]
    out_dir: str | None = None  # None: the package's committed weights folder


def augment(pixels: torch.Tensor, generator: torch.Generator, noise_max: float, blur_p: float,
            colour_jitter: float) -> torch.Tensor:
    """Colour gain, optional 3x3 blur, Gaussian noise: the artifacts generated images show."""
    n = pixels.shape[0]
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1) * colour_jitter
    pixels = pixels * gain
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    blur = (torch.rand(n, 1, 1, 1, generator=generator) < blur_p).float()
    pixels = blur * blurred + (1 - blur) * pixels
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * noise_max
    return (pixels + sigma * torch.randn(pixels.shape, generator=generator)).clamp(0, 1)


def train_judge(kind: str, pixels: torch.Tensor, labels: torch.Tensor, cfg: JudgeTraining) -> Judge:
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    classes = KINDS[kind]
    net = JudgeNet(len(classes))
    steps = cfg.epochs * (len(pixels) // cfg.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.learning_rate, total_steps=steps)
    net.train()
    bar = tqdm(range(steps), desc=f"{kind} judge", unit="step")
    for step in bar:
        if step % (len(pixels) // cfg.batch_size) == 0:
            order = torch.randperm(len(pixels), generator=generator)
        start = (step % (len(pixels) // cfg.batch_size)) * cfg.batch_size
        index = order[start : start + cfg.batch_size]
        loss = F.cross_entropy(net(augment(pixels[index], generator, cfg.noise_max, cfg.blur_p, cfg.colour_jitter)), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return Judge(kind, classes, net.eval())


def confusion(judge: Judge, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[float, np.ndarray]:
    predicted, _ = judge.predict(pixels)
    matrix = np.zeros((len(judge.classes),) * 2, dtype=int)
    np.add.at(matrix, (labels.numpy(), predicted.numpy()), 1)
    return float(np.trace(matrix) / matrix.sum()), matrix


def format_confusion(classes: list[str], matrix: np.ndarray) -> str:
    """Markdown: one row per true class, its count per predicted class."""
    head = "| true \\ predicted | " + " | ".join(classes) + " |"
    rule = "|---" * (len(classes) + 1) + "|"
    rows = [f"| **{c}** | " + " | ".join(str(v) if v else "." for v in row) + " |" for c, row in zip(classes, matrix)]
    return "\n".join([head, rule, *rows])


@command(JudgeTraining)
def main(cfg: JudgeTraining) -> None:
    out = Path(cfg.out_dir or WEIGHTS)
    started = time.perf_counter()
    images, subject_ids, action_ids = random_dataset(cfg.train_images, cfg.seed)
    test_images, test_subjects, test_actions = random_dataset(cfg.test_images, cfg.seed + 10_000)
    pixels, test_pixels = to_pixels(images), to_pixels(test_images)
    report = [f"# World judges\n\nTrained by `python -m world.judges` ({json.dumps(asdict(cfg))}).\n"]
    labels = {"action": (action_ids, test_actions), "subject": (subject_ids, test_subjects)}
    for kind, (train_labels, test_labels) in labels.items():
        judge = train_judge(kind, pixels, torch.from_numpy(train_labels), cfg)
        accuracy, matrix = confusion(judge, test_pixels, torch.from_numpy(test_labels))
        judge.save(out)
        print(f"{kind} judge: {100 * accuracy:.2f}% on {cfg.test_images} held-out renders")
        report.append(f"## {kind.capitalize()} judge: {100 * accuracy:.2f}% on {cfg.test_images} held-out renders"
                      f"\n\n{format_confusion(judge.classes, matrix)}\n")
    minutes = (time.perf_counter() - started) / 60
    report.insert(1, f"Training and evaluation took {minutes:.1f} minutes on this machine ({torch.get_num_threads()} threads).\n")
    write_atomic(out / "judges.md", "\n".join(report).encode())
    write_atomic(out / "judges.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)).encode())


if __name__ == "__main__":
    main()
