"""Tests for the code sandbox and CodeVerifier: hostile programs must be contained and fail."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import textwrap
import time

import pytest

from hf_language_ranker.verifiers import CodeVerifier, SandboxResult, extract_code, run_in_sandbox
from hf_language_ranker.verifiers.sandbox import sandbox_processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
requires_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: only root can run the program as a throwaway unprivileged uid"
)


def run(program: str, **kwargs: object) -> SandboxResult:
    kwargs.setdefault("timeout", 10.0)
    return run_in_sandbox(textwrap.dedent(program), **kwargs)  # type: ignore[arg-type]


def assert_no_leftovers(result: SandboxResult) -> None:
    if result.sandbox_uid is not None:
        assert sandbox_processes(result.sandbox_uid) == []


# ---------------------------------------------------------------------------------------------
# extract_code
# ---------------------------------------------------------------------------------------------


def test_extract_code_prefers_last_python_block() -> None:
    text = "Try:\n```python\nx = 1\n```\nBetter:\n```py\nx = 2\n```\nShell:\n```bash\nls\n```\n"
    assert extract_code(text) == "x = 2\n"


def test_extract_code_plain_fence_unterminated_fence_and_raw_text() -> None:
    assert extract_code("Here:\n```\ny = 3\n```") == "y = 3\n"
    assert extract_code("```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("    return a + b\n") == "    return a + b\n"


# ---------------------------------------------------------------------------------------------
# Ordinary behaviour
# ---------------------------------------------------------------------------------------------


def test_clean_run_in_fresh_isolated_directory() -> None:
    result = run(
        """
        import json, os, sys
        print(json.dumps({"cwd": os.getcwd(), "files": os.listdir("."), "home": os.environ["HOME"],
                          "isolated": sys.flags.isolated, "uid": os.getuid()}))
        """
    )
    assert result.passed and result.returncode == 0 and not result.timed_out, result.reason
    info = json.loads(result.stdout)
    assert info["files"] == [] and info["home"] == info["cwd"] and info["isolated"] == 1
    assert not os.path.exists(info["cwd"]), "the working directory must be deleted afterwards"
    if IS_ROOT:
        assert info["uid"] == result.sandbox_uid != 0


def test_failure_reports_exit_code_and_error() -> None:
    result = run("raise ValueError('boom')")
    assert not result.passed and result.returncode == 1
    assert "ValueError: boom" in result.stderr and "ValueError: boom" in result.reason
    assert 'program.py", line 1' in result.stderr  # tracebacks point at the program's own lines


def test_program_that_closes_its_output_still_runs_to_completion() -> None:
    result = run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.5)\nos._exit(0)\n")
    assert result.passed and result.returncode == 0, result.reason


# ---------------------------------------------------------------------------------------------
# Hostile programs
# ---------------------------------------------------------------------------------------------


def test_infinite_loop_times_out() -> None:
    start = time.monotonic()
    result = run("while True:\n    pass\n", timeout=2)
    assert result.timed_out and not result.passed and "timed out" in result.reason
    assert time.monotonic() - start < 6
    assert_no_leftovers(result)


def test_cpu_limit_kills_busy_loop_before_wall_clock_timeout() -> None:
    start = time.monotonic()
    result = run("while True:\n    pass\n", timeout=20, cpu_seconds=1)
    assert not result.passed and not result.timed_out and result.returncode is not None
    assert result.returncode < 0  # SIGXCPU, then SIGKILL at the hard limit
    assert time.monotonic() - start < 10


@requires_root
def test_fork_bomb_is_contained_and_fully_killed() -> None:
    start = time.monotonic()
    result = run("import os\nwhile True:\n    os.fork()\n", timeout=3, max_processes=16)
    assert not result.passed
    assert time.monotonic() - start < 10
    assert_no_leftovers(result)


@requires_root
def test_persistent_fork_bomb_that_escapes_the_process_group() -> None:
    program = """
    import os
    if os.fork() == 0:
        os.setsid()  # leave the process group: killpg alone would miss it
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    start = time.monotonic()
    result = run(program, timeout=2, max_processes=16)
    assert result.timed_out and not result.passed
    assert time.monotonic() - start < 10
    assert_no_leftovers(result)


@requires_root
def test_process_count_is_capped() -> None:
    program = """
    import os, time
    children = 0
    try:
        for _ in range(40):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    except OSError:
        pass
    print(children)
    """
    result = run(program, max_processes=8)
    assert result.passed, result.reason
    assert int(result.stdout) < 8  # the program itself counts towards the limit
    assert_no_leftovers(result)  # the sleeping children were killed, not left behind


def test_background_process_left_after_exit_is_killed() -> None:
    program = f"""
    import os, time
    if os.fork() == 0:
        os.setsid()
        time.sleep(1)
        open({os.path.join(tempfile.gettempdir(), "hflr-sandbox-escaped")!r}, "w").write("escaped")
        os._exit(0)
    print("parent done")
    """
    result = run(program)
    assert result.passed and result.stdout.strip() == "parent done"
    time.sleep(1.5)
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), "hflr-sandbox-escaped"))
    assert_no_leftovers(result)


def test_memory_bomb_fails_fast() -> None:
    start = time.monotonic()
    result = run("x = bytearray(10 * 1024**3)\nprint('allocated')\n")
    assert not result.passed and "MemoryError" in result.stderr and "allocated" not in result.stdout
    assert time.monotonic() - start < 5


def test_gradual_memory_growth_hits_the_limit() -> None:
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))\n", memory_mb=256)
    assert not result.passed and not result.timed_out and "MemoryError" in result.stderr


def test_huge_output_is_truncated() -> None:
    limit = 4096
    program = "import sys\nsys.stdout.write('x' * 100_000_000)\nsys.stderr.write('y' * 100_000_000)\n"
    result = run(program, max_output_bytes=limit)
    assert len(result.stdout) <= limit and len(result.stderr) <= limit
    assert result.stdout == "x" * limit and result.stderr == "y" * limit
    assert result.passed and "truncated" in result.reason


def test_file_size_limit() -> None:
    result = run("open('big.bin', 'wb').write(b'0' * (8 * 2**20))\n", max_file_mb=1)
    assert not result.passed


@requires_root
def test_cannot_delete_files_outside_its_directory() -> None:
    outside = tempfile.mkdtemp(prefix="hflr-test-protected-")
    try:
        os.chmod(outside, 0o755)
        victim = os.path.join(outside, "keep.txt")
        with open(victim, "w") as f:
            f.write("precious")
        os.chmod(victim, 0o644)
        for program in (f"import os\nos.remove({victim!r})\n", f"import shutil\nshutil.rmtree({outside!r})\n"):
            result = run(program)
            assert not result.passed and "PermissionError" in result.stderr
        result = run(f"open({victim!r}, 'w').write('overwritten')\n")
        assert not result.passed and "PermissionError" in result.stderr
        with open(victim) as f:
            assert f.read() == "precious"
    finally:
        for name in os.listdir(outside):
            os.remove(os.path.join(outside, name))
        os.rmdir(outside)


@requires_root
def test_files_left_in_shared_tmp_are_removed() -> None:
    path = os.path.join(tempfile.gettempdir(), f"hflr-sandbox-litter-{os.getpid()}")
    result = run(f"open({path!r}, 'w').write('litter')\nprint('written')\n")
    assert result.passed and "written" in result.stdout
    assert not os.path.exists(path)


def test_network_is_unreachable() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        programs = [
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n",
            # _socket bypasses the Python-level guard: only the network namespace stops this one.
            f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n",
            "import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)\n"
            "s.sendto(b'x', ('8.8.8.8', 53))\n",
        ]
        for program in programs:
            result = run(program, timeout=5)
            assert not result.passed, f"network access succeeded: {program}"
            assert "Error" in result.stderr
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


@requires_root
def test_cannot_kill_the_parent() -> None:
    for program in (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n",
    ):
        result = run(program)
        assert not result.passed and "PermissionError" in result.stderr
    assert os.getpid() > 0  # still alive to assert anything at all


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_test_secret_value_4242"
    monkeypatch.setenv("HF_TOKEN_TEST_SECRET", secret)
    result = run("import json, os\nprint(json.dumps(dict(os.environ)))\n")
    assert result.passed, result.reason
    env = json.loads(result.stdout)
    assert set(env) == {"PATH", "LANG", "HOME"}
    assert secret not in result.stdout
    if IS_ROOT:  # a different uid cannot read the parent's environment through /proc either
        result = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n")
        assert not result.passed and secret not in result.stdout and "PermissionError" in result.stderr


# ---------------------------------------------------------------------------------------------
# CodeVerifier
# ---------------------------------------------------------------------------------------------

HUMANEVAL = {
    "task_id": "HumanEval/0",
    "prompt": 'from typing import List\n\n\ndef add_all(xs: List[int]) -> int:\n    """Sum of xs."""\n',
    "entry_point": "add_all",
    "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n",
}

MBPP = {
    "text": "Write a function to square a number.",
    "tests": ["assert square(3) == 9", "assert square(-2) == 4"],
    "test_setup_code": "",
}


@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    return CodeVerifier(timeout=5)


def test_humaneval_full_function_in_fenced_answer(verifier: CodeVerifier) -> None:
    answer = "Here you go:\n```python\ndef add_all(xs: List[int]) -> int:\n    return sum(xs)\n```\nDone."
    assert verifier(HUMANEVAL, answer) == 1.0
    wrong = "```python\ndef add_all(xs: List[int]) -> int:\n    return sum(xs) + 1\n```"
    assert verifier(HUMANEVAL, wrong) == 0.0


def test_humaneval_body_completion(verifier: CodeVerifier) -> None:
    assert verifier(HUMANEVAL, "    total = 0\n    for x in xs:\n        total += x\n    return total\n") == 1.0
    assert verifier(HUMANEVAL, "return sum(xs)") == 1.0  # unindented completion is re-indented
    assert verifier(HUMANEVAL, "    return len(xs)\n") == 0.0


def test_demo_main_block_in_candidate_is_not_run(verifier: CodeVerifier) -> None:
    answer = (
        "```python\ndef add_all(xs):\n    return sum(xs)\n\n"
        "if __name__ == '__main__':\n    print(add_all([int(input())]))\n```"
    )
    assert verifier(HUMANEVAL, answer) == 1.0  # input() would hit EOF if the demo block ran


def test_noisy_candidate_passes_unless_output_hides_the_marker() -> None:
    answer = "```python\ndef add_all(xs):\n    print('debug ' * 10)\n    return sum(xs)\n```"
    assert CodeVerifier(timeout=5)(HUMANEVAL, answer) == 1.0
    result = CodeVerifier(timeout=5, max_output_bytes=64).run(HUMANEVAL, answer)
    assert not result.passed and "max_output_bytes" in result.reason


def test_exit_zero_before_tests_is_a_failure(verifier: CodeVerifier) -> None:
    cheat = "```python\nimport sys\nsys.exit(0)\ndef add_all(xs):\n    return 0\n```"
    result = verifier.run(HUMANEVAL, cheat)
    assert not result.passed and "before the tests finished" in result.reason
    assert verifier(HUMANEVAL, "```python\nimport os\nos._exit(0)\n```") == 0.0


def test_hostile_candidate_scores_zero() -> None:
    fast = CodeVerifier(timeout=2)
    assert fast(HUMANEVAL, "```python\ndef add_all(xs):\n    while True:\n        pass\n```") == 0.0


def test_mbpp_correct_and_incorrect(verifier: CodeVerifier) -> None:
    assert verifier(MBPP, "```python\ndef square(n):\n    return n * n\n```") == 1.0
    assert verifier(MBPP, "```python\ndef square(n):\n    return n * 2\n```") == 0.0
    assert verifier(MBPP, "I cannot solve this.") == 0.0


def test_mbpp_setup_code_and_test_list_key(verifier: CodeVerifier) -> None:
    example = {
        "test_list": ["assert double(HALF) == 1.0"],
        "test_setup_code": "HALF = 0.5",
    }
    assert verifier(example, "def double(x):\n    return 2 * x\n") == 1.0


def test_unknown_example_shape_raises_clear_error(verifier: CodeVerifier) -> None:
    with pytest.raises(ValueError, match=r"'prompt', 'test', 'entry_point'.*'tests'"):
        verifier({"question": "write code"}, "print(1)")


def test_verifier_name_and_parse(verifier: CodeVerifier) -> None:
    assert verifier.name == "code"
    assert verifier.parse("```python\nx = 1\n```") is None
