"""The attacks benchmark end to end (quick): every search is answered under each attack, and logins are refused."""

import json

import pytest

from vidsearch.bench.__main__ import main as bench


@pytest.mark.slow
def test_searches_are_answered_under_every_attack(capsys):
    assert bench(["attacks", "--quick"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    conditions = {record["condition"]: record for record in records if "condition" in record}
    assert list(conditions) == ["alone", "slowloris", "login_flood_one_address", "login_flood_many_addresses"]
    assert [record["failed"] for record in conditions.values()] == [0, 0, 0, 0]
    assert conditions["slowloris"]["slow_clients_opened"] == 150
    assert conditions["slowloris"]["slow_clients_left_open"] <= 32  # the per-address cap
    for flood in ("login_flood_one_address", "login_flood_many_addresses"):
        answers = conditions[flood]["login_answers"]
        assert answers.get("429", 0) > answers.get("200", 0), answers
    assert records[-1]["bench"] == "attacks" and records[-1]["ratio"] > 0
