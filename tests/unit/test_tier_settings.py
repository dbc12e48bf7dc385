"""``TierSettings`` refuses tier lists that never did what they said: a tier named twice, a rule for a tier
the order does not name, a rule for the first tier. Each was taken silently, and the mover then did
nothing for it (or "moved" an image to the pool it was in)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nodes.manager.tiers import TierRule, TierSettings


@pytest.mark.parametrize(("given", "says"), [
    ({"order": ["hot", "hot"]}, "tier 'hot' is named twice in PIXELFOX_TIERS__ORDER"),
    ({"order": ["hot", " "]}, "a tier name is empty"),
    ({"rules": {"warm": {}, "archive": {}}},
     "PIXELFOX_TIERS__RULES has a rule for 'archive', which PIXELFOX_TIERS__ORDER (hot, warm, cold) does not name"),
    ({"rules": {"hot": {"after_days": 1}}}, "PIXELFOX_TIERS__RULES has a rule for 'hot', the first tier"),
])
def test_a_tier_list_that_cannot_work_is_refused(given: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        TierSettings.model_validate(given)
    assert says in str(refused.value)


def test_the_default_rules_follow_a_shorter_order() -> None:
    """Two tiers only: the default cold rule is dropped, not refused (the user set no rule)."""
    two = TierSettings.model_validate({"order": ["hot", "warm"]})
    assert two.rules == {"warm": TierRule(after_days=30, idle_days=14)}
    renamed = TierSettings.model_validate({"order": ["fast", "slow"]})
    assert renamed.rules == {}  # no rule: nothing moves into "slow" until one is set
    assert TierSettings().rules.keys() == {"warm", "cold"}
