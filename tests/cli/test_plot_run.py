"""tools/plot_run.py."""

from __future__ import annotations

from pathlib import Path

from helpers import run_tool

from captioning.training.run_log import RunLog

# --------------------------------------------------------------------------- curves


def _run_dir(tmp_path: Path, epochs: int = 4) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = RunLog(tmp_path, tensorboard=False)
    for e in range(1, epochs + 1):
        log.log_epoch(
            {
                "epoch": e,
                "step": 10 * e,
                "train_loss": 3.0 / e,
                "val_Bleu_1": 0.1 * e,
                "val_Bleu_4": 0.05 * e,
                "val_CIDEr": 0.3 * e,
                "val_num_images": 20,
            }
        )
    log.close()
    return tmp_path


def test_plot_run_tool(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run")
    done = run_tool("plot_run.py", run)
    assert done.returncode == 0, done.stderr
    assert (run / "curves.png").is_file() and "4 epochs plotted" in done.stdout
    assert run_tool("plot_run.py", run / "metrics.csv", "--out", tmp_path / "x.svg").returncode == 0
    assert (tmp_path / "x.svg").read_text().lstrip().startswith("<?xml")
    missing = run_tool("plot_run.py", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.csv").write_text("epoch\n")
    empty = run_tool("plot_run.py", tmp_path / "empty")
    assert missing.returncode == 2 and empty.returncode == 2
    err = missing.stderr + empty.stderr
    assert "nowhere" in err and "no epochs" in err and "Traceback" not in err
