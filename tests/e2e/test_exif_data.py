"""EXIF fields as data (issue 3): the processing node returns them, the manager stores them, the
owner alone sees the GPS position, and nothing owner-only reaches the shared read model."""

from __future__ import annotations

import json

import redis
import requests

from pixelfox import readmodel
from tests.conftest import CORPUS, ClusterHandle

PHOTO = CORPUS / "photos" / "iphone5_orient3_gps.jpg"  # Apple iPhone 5, GPS 47°37.63' N 122°20.24' W


def test_exif_fields_are_stored_and_gps_is_for_the_owner_only(cluster: ClusterHandle) -> None:
    res = cluster.pixelfox("put", "--json", "--wait", str(PHOTO))
    assert res.returncode == 0, res.stderr
    mine = json.loads(res.stdout.splitlines()[0])  # the admin uploaded it: owner's view
    assert mine["status"] == "ready"
    assert mine["exif"]["make"] == "Apple" and mine["exif"]["model"] == "iPhone 5"
    assert mine["exif"]["taken_at"].count(":") == 4  # "YYYY:MM:DD HH:MM:SS", EXIF local time
    assert not any("gps" in k.lower() for k in mine["exif"])
    lat, lon = mine["location"]["latitude"], mine["location"]["longitude"]
    assert abs(lat - (47 + 37.63 / 60)) < 1e-6 and abs(lon + (122 + 20.24 / 60)) < 1e-6

    anon = requests.get(f"{cluster.web_url}/api/v1/images/{mine['id']}", timeout=10)
    assert anon.status_code == 200
    seen = anon.json()
    assert seen["exif"] == mine["exif"] and seen["location"] is None
    owner = requests.get(f"{cluster.web_url}/api/v1/images/{mine['id']}", timeout=10,
                         headers={"X-API-Key": cluster.admin_api_key})  # read after the read model has it
    assert owner.status_code == 200 and owner.json()["location"] == mine["location"]
    page = requests.get(f"{cluster.web_url}/i/{mine['id']}", timeout=10).text
    assert "iPhone 5" in page and "Camera model" in page
    assert f"{lat:.3f}" not in page and f"{lon:.3f}" not in page

    cached = readmodel.decode(redis.Redis.from_url(cluster.redis_url).get(readmodel.key(mine["id"])))
    assert cached is not None and cached.image is not None
    assert dict(cached.image.exif) == mine["exif"] and not cached.image.HasField("location")
