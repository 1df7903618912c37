"""What the commands share (captioning.cli.common): the decoding flags."""

from helpers import run_tool


def _options(help_text: str) -> dict[str, str]:
    """``--flag`` -> its whole entry (flag, metavar and help, whitespace collapsed) in --help."""
    entries: dict[str, str] = {}
    flag = None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            flag = next(w for w in line.split() if w.startswith("--")).rstrip(",")
            entries[flag] = line
        elif flag is not None and line.startswith("    "):
            entries[flag] += " " + line
        else:
            flag = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_caption_and_evaluate_share_the_decoding_flags():
    """tools/caption.py and tools/evaluate.py take their decoding flags from one helper: the
    flags both have read the same in --help; caption.py adds --n-best and the sampling flags."""
    helps = {}
    for tool in ("caption.py", "evaluate.py"):
        done = run_tool(tool, "--help", COLUMNS="100")
        assert done.returncode == 0, done.stderr
        helps[tool] = _options(done.stdout)
    caption, evaluate = helps["caption.py"], helps["evaluate.py"]
    shared = ["--beam-size", "--max-len", "--length-penalty", "--no-repeat-ngram-size"]
    for flag in shared:
        assert flag in caption and caption[flag] == evaluate[flag], flag
    sampling = ["--sample", "--temperature", "--top-k", "--num-samples", "--seed"]
    for flag in ["--n-best", *sampling]:
        assert flag in caption and flag not in evaluate, flag
