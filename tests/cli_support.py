"""`mmad` as a user runs it, in a subprocess, and what its one-line errors must look like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def mmad(env: dict, *args: str, cwd: Path | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """`python -m mmad ARGS` (the `mmad` command's own entry point)."""
    return subprocess.run([sys.executable, "-m", "mmad", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kw)


def score_args(url: str, out: Path, *extra: str, provider: str = "openai", model: str = "m") -> list[str]:
    return ["score", "--provider", provider, "--model", model, "--base-url", url, "--dataset", "toy", "--out",
            str(out), "--quiet", *extra]


def one_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The single error line of a failed command (ours, `error: ...`, or argparse's `mmad X: error:
    ...`), after checking the exit code and that nothing else went wrong (no traceback)."""
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


def jobs_sent(server) -> list:
    """Scoring requests the wire server received (the max_tokens of `mmad score`)."""
    return [r for r in server.requests if r.body.get("max_tokens") == 300]


def without_override() -> None:
    """In the child: drop root's capabilities to write where permission bits forbid it (prctl
    PR_CAPBSET_DROP of CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; effective at exec)."""
    if os.geteuid() == 0:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):
            libc.prctl(24, capability, 0, 0, 0)

