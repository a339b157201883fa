"""Run many `dltrain` command lines in one process, each under a time bound, the whole
process under a memory limit (RLIMIT_AS), and report per case: exit code, stderr, whether
a traceback escaped, and the seconds it took. One torch import serves every case.

    python -m tests.hostile.runner CASES.json RESULTS.json

CASES.json is a list of {"argv": [...], "cwd": "...", "timeout": seconds}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback

MEMORY_LIMIT = 6 << 30  # address space: a case that tries to eat the machine fails here


class TimedOut(BaseException):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise TimedOut()


def run_case(argv: list[str], cwd: str, timeout: float, env: dict | None = None) -> dict:
    from dltrain import fsutil
    from dltrain.cli.app import STATE, app
    from dltrain.run.inference import LOAD_OPTIONS

    STATE["debug"] = False
    LOAD_OPTIONS.allow_nonfinite = False
    fsutil._FAULT_HITS.clear()
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    err, out = io.StringIO(), io.StringIO()
    code, escaped = 0, None
    old = os.getcwd()
    t0 = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                ret = app(argv, standalone_mode=False)
                code = ret if isinstance(ret, int) else 0
            except SystemExit as e:
                code = int(e.code or 0)
            except TimedOut:
                escaped, code = "timeout", -1
            except MemoryError:
                escaped, code = "MemoryError", -2
            except BaseException as e:  # what typer would have printed as a traceback
                kind = type(e).__name__
                exit_code = getattr(e, "exit_code", None)
                if kind == "Exit" and isinstance(exit_code, int):
                    code = exit_code
                elif isinstance(exit_code, int) and hasattr(e, "format_message"):
                    code = exit_code  # a usage error, printed by typer as a message
                    err.write(e.format_message())
                elif kind == "Abort":
                    escaped, code = "Abort", 1
                else:
                    escaped, code = traceback.format_exc(), 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.chdir(old)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {
        "argv": argv,
        "code": code,
        "stderr": err.getvalue(),
        "stdout": out.getvalue()[-2000:],
        "escaped": escaped,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import dltrain.cli  # noqa: F401  (imported once, under the limit)

    cases = json.loads(open(cases_path).read())
    results = [run_case(c["argv"], c["cwd"], c.get("timeout", 30), c.get("env")) for c in cases]
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
