"""Run pytest and fail if it collected no tests (pytest exit code 5 must never pass silently)."""

import sys

import pytest


def main() -> int:
    code = pytest.main(["-q", *sys.argv[1:]])
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("run_pytest: no tests were collected; treating as failure", file=sys.stderr)
        return 1
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
