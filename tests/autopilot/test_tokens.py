import subprocess
import sys

import pytest
from pydantic import ValidationError

from autopilot.tokens import OFFLINE_ENCODING, Usage, count_tokens, encoding_for


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


def test_usage_sums_and_stays_estimated_once_any_part_is():
    reported = Usage(tokens_in=100, tokens_out=20, cached_in=50, calls=1, cost_usd=0.25)
    estimated = Usage(tokens_in=30, reported=False, calls=1)
    total = reported + estimated
    assert (total.tokens_in, total.tokens_out, total.cached_in) == (130, 20, 50)
    assert (total.calls, total.cost_usd, total.reported) == (2, 0.25, False)


def test_usage_refuses_negative_counts():
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Usage(tokens_in=-1)
