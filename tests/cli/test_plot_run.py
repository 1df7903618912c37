"""tools/plot_run.py."""

from __future__ import annotations

from pathlib import Path

from helpers import metrics_run_dir, run_tool

# --------------------------------------------------------------------------- curves


def test_plot_run_tool(tmp_path: Path) -> None:
    run = metrics_run_dir(tmp_path / "run")
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


def test_plot_run_marks_the_best_epoch_by_the_runs_own_monitor(tmp_path: Path) -> None:
    run = metrics_run_dir(tmp_path / "run")
    done = run_tool("plot_run.py", run)
    assert "best epoch 4 by Bleu_4" in done.stdout, done.stderr  # no saved config: the default
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("trainer:\n  monitor: CIDEr\n")
    done = run_tool("plot_run.py", run)
    assert "best epoch 2 by CIDEr" in done.stdout, done.stderr
    unknown = run_tool("plot_run.py", run, "--monitor", "SPICE")
    assert unknown.returncode == 2 and "--monitor" in unknown.stderr
    assert "Bleu_4" in unknown.stderr and "Traceback" not in unknown.stderr
