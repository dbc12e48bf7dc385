"""Row ids: ULIDs (python-ulid), written as 26 characters of Crockford's base32 in upper case.

Uploads, images and albums use them as primary keys; they are time-ordered, so ``id < other``
means "made earlier" (the list cursors in ``nodes/manager/cursors.py`` rely on it).
"""

from __future__ import annotations

import re

#: a ULID as python-ulid writes it (no I, L, O, U); use ``ULID.fullmatch``
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
#: a job's id: its Redis stream entry id, ``<ms>-<seq>`` (``pixelfox jobs``); use ``ENTRY_ID.fullmatch``
ENTRY_ID = re.compile(r"\d+-\d+")
