"""A private image's job carries its salt (``Job.private_salt``) and the processing node writes the variants
under ``p/<salt>/`` keys; the manager moves a variant only when its key does not fit the image's visibility
when the job reports (:func:`nodes.manager.objects.wanted_key`)."""

from __future__ import annotations

import pytest

from nodes.manager.objects import image_salt, wanted_key
from nodes.proc.service import Processor, job_variant_key
from pixelfox import errors, imaging
from pixelfox.db.models import Image
from pixelfox.storage.keys import checked_salt, keyed_for, private_key, variant_key
from pixelfox.v1 import manager_pb2

SHA = "ab" * 32
SALT, OTHER = "0f" * 16, "e1" * 16
KEY = variant_key(SHA, 4, "medium", "webp")


def test_keyed_for_gives_the_key_of_the_same_bytes_for_a_salt_or_none() -> None:
    assert keyed_for(KEY, SALT) == f"p/{SALT}/{KEY}" == private_key(KEY, SALT)
    assert keyed_for(private_key(KEY, OTHER), SALT) == f"p/{SALT}/{KEY}"  # a new salt: the same public key behind
    assert keyed_for(private_key(KEY, OTHER), "") == KEY == keyed_for(KEY, "")


@pytest.mark.parametrize("salt", ["0F" * 16, "0f" * 15, "0f" * 17, "zz" * 16, f"{'0f' * 15}/.."])
def test_a_malformed_salt_is_refused(salt: str) -> None:
    with pytest.raises(errors.BadRequest, match="private salt must be 32 hex digits"):
        checked_salt(salt)
    with pytest.raises(errors.BadRequest):
        keyed_for(KEY, salt)


@pytest.mark.parametrize(("visibility", "salt", "key", "wanted"), [
    ("public", "", KEY, KEY),
    ("public", "", f"p/{OTHER}/{KEY}", KEY),  # went public while its job ran
    ("private", SALT, KEY, f"p/{SALT}/{KEY}"),  # an older processing node wrote the public key
    ("private", SALT, f"p/{OTHER}/{KEY}", f"p/{SALT}/{KEY}"),  # private again (a new salt) while its job ran
    ("private", SALT, f"p/{SALT}/{KEY}", f"p/{SALT}/{KEY}"),
    ("public", SALT, f"p/{SALT}/{KEY}", KEY),  # a salt left on a public row is not used
])
def test_wanted_key_fits_the_images_visibility(visibility: str, salt: str, key: str, wanted: str) -> None:
    img = Image(visibility=visibility, private_salt=salt)
    assert image_salt(img) == (salt if visibility == "private" else "")
    assert wanted_key(img, key) == wanted


def test_the_processing_node_keys_variants_by_the_jobs_salt() -> None:
    v = imaging.Variant(name="medium", format="webp", mime="image/webp", width=1, height=1, data=b"x", frames=1)
    job = manager_pb2.Job(sha256=SHA, recipe_version=4)
    assert job_variant_key(job, v) == KEY
    job.private_salt = SALT
    assert job_variant_key(job, v) == f"p/{SALT}/{KEY}"


async def test_a_job_with_a_malformed_salt_fails_for_good_before_anything_is_read() -> None:
    """No source node is named: a job that got as far as reading its original would fail ``unavailable``,
    to be retried."""
    processor = Processor("secret", 1, imaging.Recipe(), imaging.Limits())
    try:
        outcome = await processor.run(manager_pb2.Job(job_id="j1", lease_id="l1", sha256=SHA, recipe_version=4,
                                                      private_salt="not-a-salt"))
    finally:
        processor.close()
    assert outcome.result is None and outcome.failure is not None
    f = outcome.failure
    assert (f.job_id, f.lease_id, f.code, f.permanent) == ("j1", "l1", "bad-request", True), f
    assert f.message == ("the job's private salt is malformed (private salt must be 32 hex digits); "
                         "nothing was processed"), f.message
