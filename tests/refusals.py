"""The check every refusal test makes: the call ends in one ``UsageError`` line holding every fragment."""

import pytest

from egg.zoo.discriminative_captioner.runtime.errors import UsageError


def refused(call, *fragments):
    """Runs ``call()``, which must refuse in one line holding every fragment; returns the line."""
    with pytest.raises(UsageError) as error:
        call()
    line = str(error.value)
    assert "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line
