"""Hypothesis example counts that follow the profile (tests/conftest.py registers the profiles).

A test that states its count writes ``@examples(n)`` where it would write
``@settings(max_examples=n)``: ``n`` examples in the default profile ("ralu", CI's), and ``n``
times the loaded profile's default count over CI's in another, so ten times as many under
``pytest --hypothesis-profile=thorough``. The count is read when the test module is imported,
after pytest has loaded the profile.
"""

from hypothesis import settings


def examples(n: int, *, suppress_health_check=(), **kwargs) -> settings:
    """``settings(max_examples=n, **kwargs)`` with ``n`` scaled by the loaded profile; health
    checks suppressed here are added to the profile's (a plain ``settings`` would replace them)."""
    profile = settings.default
    scale = profile.max_examples / settings.get_profile("ralu").max_examples
    return settings(max_examples=max(1, round(n * scale)),
                    suppress_health_check=[*profile.suppress_health_check, *suppress_health_check], **kwargs)
