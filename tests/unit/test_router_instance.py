from pathlib import Path

import pytest

from gateway.config.schema import DialPlan
from gateway.config.schema import Route as R
from gateway.routing.router import NoRoute, Router
from gateway.store.instance import load_or_create_instance_id


def test_first_matching_route_wins_and_rewrites_number() -> None:
    routes = (R(r"1\d\d", "local"), R(r"9(\d+)", "trunk:main", strip=1, prepend="+1"))
    router = Router(DialPlan(routes=routes))
    assert router.route("102").kind == "local"
    d = router.route("95551234")
    assert (d.kind, d.trunk, d.number) == ("trunk", "main", "+15551234")
    with pytest.raises(NoRoute):
        router.route("5")


def test_instance_id_is_stable_across_restarts(tmp_path: Path) -> None:
    first = load_or_create_instance_id(tmp_path)
    assert first.startswith("urn:uuid:")
    assert load_or_create_instance_id(tmp_path) == first
    (tmp_path / "instance-id").write_text("garbage")
    replaced = load_or_create_instance_id(tmp_path)
    assert replaced != first and replaced.startswith("urn:uuid:")
