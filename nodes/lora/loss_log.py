"""Training loss log: a CSV file written as training goes, and a loss-curve PNG drawn with Pillow.

The CSV (``step,loss,smoothed_loss,lr,elapsed_s``) gets one row per optimiser step and is
flushed at once, so a killed run leaves every finished step in it. On resume the rows after the
checkpoint's step (the lost steps of the killed run, or a torn last line) are dropped before
training goes on, so a resumed run's log equals an uninterrupted run's, except for ``elapsed_s``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from PIL import Image, ImageDraw, ImageFont

__all__ = ["CSV_HEADER", "LossLog", "LossRow", "draw_loss_png", "read_loss_csv"]

CSV_HEADER = ("step", "loss", "smoothed_loss", "lr", "elapsed_s")


@dataclass(frozen=True)
class LossRow:
    """One CSV row (``step`` counts from 1)."""

    step: int
    loss: float
    smoothed: float
    lr: float
    elapsed: float


def read_loss_csv(path: Path) -> list[LossRow]:
    """Reads a loss CSV, skipping a torn or malformed line.

    Args:
        path: The CSV file.

    Returns:
        The rows in file order (empty if the file is missing).
    """
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            try:
                rows.append(
                    LossRow(
                        int(rec["step"]),
                        float(rec["loss"]),
                        float(rec["smoothed_loss"]),
                        float(rec["lr"]),
                        float(rec["elapsed_s"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
    return rows


@dataclass
class LossLog:
    """Debiased EMA of the loss plus the CSV writer.

    Attributes:
        path: The CSV file.
        beta: EMA factor of the smoothed loss.
        ema: Raw (biased) EMA state.
        count: Steps folded into the EMA.
        rows: All rows of this run (resumed rows included).
    """

    path: Path
    beta: float = 0.95
    ema: float = 0.0
    count: int = 0
    rows: list[LossRow] = field(default_factory=list)
    _file: TextIO | None = field(default=None, init=False, repr=False)

    def start(self, resume_step: int = 0, state: dict[str, float] | None = None) -> None:
        """Opens the CSV: fresh, or keeping the rows up to ``resume_step``.

        Args:
            resume_step: Last step the checkpoint holds (0 = fresh start).
            state: The EMA state saved with that checkpoint (see :meth:`state`).
        """
        self.rows = [r for r in read_loss_csv(self.path) if r.step <= resume_step] if resume_step else []
        if state:
            self.ema, self.count = float(state["ema"]), int(state["count"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            for r in self.rows:
                writer.writerow(_fmt(r))
        os.replace(tmp, self.path)
        self._file = self.path.open("a", newline="", encoding="utf-8")

    def add(self, step: int, loss: float, lr: float, elapsed: float) -> float:
        """Records one step and returns the smoothed loss.

        Args:
            step: The step number (from 1).
            loss: That step's loss.
            lr: The learning rate used.
            elapsed: Training seconds so far.

        Returns:
            The debiased EMA of the loss.
        """
        if math.isfinite(loss):
            self.count += 1
            self.ema = self.beta * self.ema + (1.0 - self.beta) * loss
        smoothed = self.ema / (1.0 - self.beta**self.count) if self.count else float("nan")
        row = LossRow(step, loss, smoothed, lr, elapsed)
        self.rows.append(row)
        if self._file is not None:
            csv.writer(self._file).writerow(_fmt(row))
            self._file.flush()
        return smoothed

    def state(self) -> dict[str, float]:
        """The EMA state, for checkpoints."""
        return {"ema": self.ema, "count": float(self.count)}

    def close(self) -> None:
        """Closes the CSV file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _fmt(r: LossRow) -> list[str]:
    return [str(r.step), f"{r.loss:.8g}", f"{r.smoothed:.8g}", f"{r.lr:.8g}", f"{r.elapsed:.3f}"]


def draw_loss_png(
    rows: list[LossRow], path: Path, *, size: tuple[int, int] = (800, 450), title: str = ""
) -> None:
    """Draws the loss curve (raw loss grey, smoothed loss blue) and writes it atomically.

    Args:
        rows: The loss rows.
        path: The PNG file.
        size: Image size in pixels.
        title: Text drawn at the top left.
    """
    w, h = size
    left, right, top, bottom = 70, 20, 30, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pts = [r for r in rows if math.isfinite(r.loss)]
    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    draw.text((left, 8), title or "training loss", fill=(0, 0, 0), font=font)
    if pts:
        lo = min(min(r.loss for r in pts), min(r.smoothed for r in pts if math.isfinite(r.smoothed)))
        hi = max(r.loss for r in pts)
        if hi <= lo:
            hi = lo + 1e-6
        s0, s1 = pts[0].step, max(pts[-1].step, pts[0].step + 1)

        def xy(step: int, value: float) -> tuple[float, float]:
            x = left + (step - s0) / (s1 - s0) * (w - left - right)
            y = h - bottom - (value - lo) / (hi - lo) * (h - top - bottom)
            return x, y

        stride = max(1, len(pts) // (4 * (w - left - right)))
        raw = [xy(r.step, r.loss) for r in pts[::stride]]
        smooth = [xy(r.step, r.smoothed) for r in pts[::stride] if math.isfinite(r.smoothed)]
        if len(raw) > 1:
            draw.line(raw, fill=(190, 190, 190), width=1)
        if len(smooth) > 1:
            draw.line(smooth, fill=(30, 90, 200), width=2)
        for value in (lo, (lo + hi) / 2, hi):
            y = xy(s0, value)[1]
            draw.text((4, y - 6), f"{value:.4g}", fill=(0, 0, 0), font=font)
        draw.text((left, h - bottom + 6), str(s0), fill=(0, 0, 0), font=font)
        draw.text((w - right - 60, h - bottom + 6), f"step {s1}", fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
