import subprocess
import sys

from autopilot.tokens import OFFLINE_ENCODING, count_tokens, encoding_for


def test_counts_offline_with_the_bundled_encoding():
    assert encoding_for("some-local-model").name == OFFLINE_ENCODING
    assert count_tokens("hello world") == 2


def test_special_token_text_is_counted_not_refused():
    assert count_tokens("<|endoftext|>") >= 1


def test_works_when_the_tiktoken_cache_dir_is_missing(tmp_path):
    code = (
        "from autopilot.tokens import count_tokens; "
        "print(count_tokens('the learning rate is too high', 'gpt-4o'))"
    )
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "does-not-exist"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(out.stdout.strip()) == count_tokens("the learning rate is too high")
