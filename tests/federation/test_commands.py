"""Operator commands of CONTRACT §10 that set a node up and join it to others."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from core.models import AuditEntry
from identity.models import NodeKey
from registry.models import Platform, Resource

pytestmark = pytest.mark.django_db


def run(capsys, *args) -> dict:
    call_command(*args, "--json")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n"), "one JSON object on one line"
    return json.loads(out)


def test_cir_node_init_sets_up_role_prefix_entity_and_keys(capsys):
    result = run(capsys, "cir_node_init", "--role", "provincial", "--code", "52", "--entity-id",
                 "http://127.0.0.1:8052/")
    assert result == {"created": True, "role": "provincial", "code": "52", "prefix": "86.52",
                      "entity_id": "http://127.0.0.1:8052"}
    assert set(NodeKey.objects.values_list("purpose", flat=True)) == {"access_token", "credential", "handoff",
                                                                       "federation"}
    assert AuditEntry.objects.get(action="node.initialised").actor.startswith("command:cir_node_init (")
    again = run(capsys, "cir_node_init", "--role", "provincial", "--code", "52", "--entity-id",
                "http://127.0.0.1:8052")
    assert again["created"] is False and NodeKey.objects.count() == 4
    with pytest.raises(CommandError, match="refusing"):
        call_command("cir_node_init", "--role", "provincial", "--code", "11", "--entity-id", "http://127.0.0.1:8052")


@pytest.mark.parametrize(
    "args",
    [["--role", "national", "--code", "52"], ["--role", "provincial"], ["--role", "provincial", "--code", "99"],
     ["--role", "ministerial", "--code", "52"], ["--role", "industry", "--code", "IND1"],
     ["--role", "provincial", "--code", "52", "--entity-id", "http://example.com"],
     ["--role", "provincial", "--code", "52", "--entity-id", "ftp://127.0.0.1"]],
)
def test_cir_node_init_refuses_bad_arguments(args):
    if "--entity-id" not in args:
        args = [*args, "--entity-id", "https://cir.example.cn"]
    with pytest.raises(CommandError):
        call_command("cir_node_init", *args)
    assert not Platform.objects.exists()


def test_industry_and_ministerial_codes(capsys):
    assert run(capsys, "cir_node_init", "--role", "industry", "--code", "52.ind1", "--entity-id",
               "https://ind1.example.cn")["prefix"] == "86.52.IND1"


def test_an_uninitialised_node_mints_nothing(capsys):
    from core.errors import ApplicationError
    from registry.services import provider_approve

    with pytest.raises(ApplicationError) as excinfo:
        provider_approve(name="Too Early", uscc="91110108551385082Q", code="EARLY")
    assert excinfo.value.code == "node_not_initialized"
    with pytest.raises(CommandError, match="node_not_initialized"):
        call_command("cir_demo", "--resources", "5")
    assert Resource.objects.count() == 0


def test_cir_sync_with_no_subordinates(capsys):
    run(capsys, "cir_node_init", "--role", "national", "--entity-id", "http://127.0.0.1:8000")
    assert run(capsys, "cir_sync", "--once") == {"peers": [], "notified_superior": False}
    with pytest.raises(CommandError):
        call_command("cir_sync", "--interval", "0")
