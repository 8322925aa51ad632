"""Progress and loss reporting of a training run: loss.csv / loss.png and the Trainer callbacks.

``LossLog`` keeps ``(step, loss)`` rows, rewrites ``loss.csv`` and shows a progress bar with tokens/s;
``LivePlot`` redraws the loss curve in a notebook (or prints a log line elsewhere). Both are built by
:func:`trainer_callbacks` so that transformers is imported only when training.
"""
from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

from ..util import atomic_path, fault_point, progress


def read_loss_csv(path: str | Path) -> list[tuple[int, float]]:
    """Rows of a ``loss.csv`` (``step,loss``); empty when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def write_loss_csv(path: str | Path, rows: list[tuple[int, float]]) -> None:
    """Write ``step,loss`` rows atomically."""
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss"])
            w.writerows((s, f"{v:.6f}") for s, v in rows)


def loss_figure(rows: list[tuple[int, float]], *, title: str = "training loss"):
    """A matplotlib Figure of the loss curve (no pyplot, so no GUI backend is touched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.add_subplot()
    if rows:
        steps, losses = zip(*rows)
        ax.plot(steps, losses, lw=1.2)
        if len(rows) >= 10:  # a running mean makes the trend readable
            k = max(2, len(rows) // 10)
            smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, lw=2, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_loss_plot(rows: list[tuple[int, float]], path: str | Path) -> None:
    """Write the loss curve as a PNG (atomically)."""
    fig = loss_figure(rows)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel."""
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


def _loss_log_class(base: type) -> type:
    class LossLog(base):
        """Collects ``(step, loss)``, rewrites loss.csv and shows a progress bar with tokens/s and time left; under
        torchrun only rank 0 (``state.is_world_process_zero``) writes and shows anything."""

        def __init__(self, csv_path: Path, rows: list[tuple[int, float]]) -> None:
            self.csv_path, self.rows = csv_path, rows
            self.bar = None
            self.t0 = time.perf_counter()
            self.tokens0 = 0
            self.step0 = 0
            self.tokens_per_second = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.step0, self.tokens0 = state.global_step, state.num_input_tokens_seen or 0
            self.t0 = time.perf_counter()
            self.rows[:] = [r for r in self.rows if r[0] <= state.global_step]
            if state.is_world_process_zero:
                self.bar = progress([], total=state.max_steps, desc="finetune", unit="step")
                self.bar.n = state.global_step
                self.bar.refresh()

        def on_step_end(self, args, state, control, **kw):
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.tokens_per_second = ((state.num_input_tokens_seen or 0) - self.tokens0) / dt
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
                post = {"tok/s": f"{self.tokens_per_second:.0f}"}
                if self.rows:
                    post["loss"] = f"{self.rows[-1][1]:.4f}"
                self.bar.set_postfix(post)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and "train_loss" not in logs:
                self.rows.append((state.global_step, float(logs["loss"])))
                if state.is_world_process_zero:
                    write_loss_csv(self.csv_path, self.rows)

        def on_save(self, args, state, control, **kw):
            fault_point("finetune.save")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return LossLog


def _live_plot_class(base: type) -> type:
    class LivePlot(base):
        """Every ``every`` steps: redraw the loss plot in a notebook, or print one log line elsewhere (rank 0)."""

        def __init__(self, rows: list[tuple[int, float]], *, every: int, notebook: bool) -> None:
            self.rows, self.every, self.notebook = rows, every, notebook
            self.handle = None

        def _show(self, final: bool = False) -> None:
            if self.notebook:
                from IPython.display import Image, display  # type: ignore[import-not-found]

                buf = io.BytesIO()
                loss_figure(self.rows).savefig(buf, format="png")
                image = Image(data=buf.getvalue())
                if self.handle is None:
                    self.handle = display(image, display_id=True)
                else:
                    self.handle.update(image)
            elif self.rows and not final:
                from tqdm.auto import tqdm

                step, loss = self.rows[-1]
                tqdm.write(f"step {step}: loss {loss:.4f}", file=sys.stderr)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and state.global_step % self.every == 0 and _main(state):
                self._show()

        def on_train_end(self, args, state, control, **kw):
            if self.notebook and _main(state):
                self._show(final=True)

    return LivePlot


def _main(state) -> bool:
    return getattr(state, "is_world_process_zero", True)


def trainer_callbacks():
    """The ``(LossLog, LivePlot)`` Trainer callback classes (defined lazily: transformers is imported only when
    training)."""
    from transformers import TrainerCallback

    return _loss_log_class(TrainerCallback), _live_plot_class(TrainerCallback)
