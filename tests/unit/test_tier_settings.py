"""``TierSettings`` refuses tier lists that never did what they said: a tier named twice, a rule for a tier
the order does not name, a rule for the first tier. Each was taken silently, and the mover then did
nothing for it (or "moved" an image to the pool it was in)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nodes.manager.tiers import TierRule, TierSettings


@pytest.mark.parametrize(("given", "says"), [
    ({"order": ["hot", "hot"]}, ["order: tier 'hot' is named twice"]),
    ({"order": ["hot", " "]}, ["order: a tier name is empty"]),
    ({"rules": {"warm": {}, "archive": {}}},
     ["rules: a rule for 'archive', which PIXELFOX_TIERS__ORDER (hot, warm, cold) does not name"]),
    ({"rules": {"hot": {"after_days": 1}}}, ["rules: a rule for 'hot', the first tier: images move down only"]),
    # every problem at once, each under its own setting (the first one only was said, under PIXELFOX_TIERS)
    ({"order": ["hot", "cold", "cold", "warm", "warm"], "rules": {"hot": {}}},
     ["order: tier 'cold' is named twice; tier 'warm' is named twice"]),
    ({"order": ["a", "b"], "rules": {"a": {}, "x": {}}},
     ["rules: a rule for 'x', which PIXELFOX_TIERS__ORDER (a, b) does not name; a rule for 'a', the first tier"]),
])
def test_a_tier_list_that_cannot_work_is_refused(given: dict[str, object], says: list[str]) -> None:
    with pytest.raises(ValidationError) as refused:
        TierSettings.model_validate(given)
    got = [f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in refused.value.errors()]
    assert len(got) == len(says) and all(g.startswith(w) for g, w in zip(got, says, strict=True)), got


def test_the_default_rules_follow_a_shorter_order() -> None:
    """Two tiers only: the default cold rule is dropped, not refused (the user set no rule)."""
    two = TierSettings.model_validate({"order": ["hot", "warm"]})
    assert two.rules == {"warm": TierRule(after_days=30, idle_days=14)}
    renamed = TierSettings.model_validate({"order": ["fast", "slow"]})
    assert renamed.rules == {}  # no rule: nothing moves into "slow" until one is set
    assert TierSettings().rules.keys() == {"warm", "cold"}
