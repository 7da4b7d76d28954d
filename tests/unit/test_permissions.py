"""The roles' subject permissions (pure) and the names they share with layers above."""

from __future__ import annotations

import pytest

from overwatch_lab import cli_devices
from overwatch_lab.broker import permissions as perms
from overwatch_lab.broker.credentials import CredentialStore, new_user_seed, public_key
from overwatch_lab.core import base, stats
from overwatch_lab.errors import ConfigError, SubjectError


def grant(role, **kw):
    return perms.Grant(kw.pop("name", "e1"), role, public_key(new_user_seed()), **kw)


def test_names_shared_with_upper_layers_agree():
    assert perms.STATS_BUCKET == stats.STATS_BUCKET
    assert cli_devices.CREDENTIALS_DIR == base.CREDENTIALS_DIR


def test_a_device_may_publish_only_its_own_subjects_and_subscribe_only_its_own():
    p = perms.permissions(grant("device", org_id="org-a", entities=("e1",)))
    assert set(p.publish) == {
        "constellation.telemetry.org-a.e1",
        "constellation.events.isr.org-a.e1.>",
        "constellation.command_acks.org-a.e1",
        "constellation.entities.org-a.created",
        "constellation.entities.org-a.updated",
        "constellation.entities.org-a.status",
    }
    assert set(p.subscribe) == {"constellation.devices.org-a.e1.commands", "_INBOX.device.e1.>"}
    assert not any(x.startswith(("$JS", "$KV", "constellation.organizations")) for x in p.publish)


def test_an_observer_publishes_only_reads_and_an_operator_also_commands():
    obs = perms.permissions(grant("observer", name="observer"))
    assert all(x.startswith(("$JS.API.INFO", "$JS.API.STREAM.INFO.", "$JS.API.STREAM.MSG.GET.",
                             "$JS.API.DIRECT.GET.", "$JS.API.CONSUMER.CREATE.", "$JS.API.CONSUMER.INFO.",
                             "$JS.API.CONSUMER.MSG.NEXT.", "$JS.FC.", "$JS.ACK.CONSTELLATION_QUARANTINE."))
               for x in obs.publish)  # fmt: skip
    assert not any("DELETE" in x or "PURGE" in x or "UPDATE" in x for x in obs.publish)
    op = perms.permissions(grant("operator", name="operator"))
    assert set(op.publish) - set(obs.publish) == {"constellation.commands.>"}


def test_the_config_block_names_every_user_and_the_system_account():
    text = perms.render_authorization("pw", "spw", [grant("device", org_id="o", entities=("e1",))])
    assert '"overwatch-lab"' in text and '"overwatch-lab-sys"' in text and "system_account: SYS" in text
    assert "constellation.telemetry.o.e1" in text


def test_the_store_issues_once_refuses_clashes_and_revokes(tmp_path):
    store = CredentialStore(tmp_path / "c")
    cred = store.issue("e1", "device", org_id="o", entities=("e1",))
    assert store.issue("e1", "device", org_id="o", entities=("e1",)) == cred  # the same identity
    with pytest.raises(ConfigError, match="already exists"):
        store.issue("e1", "device", org_id="other", entities=("e1",))
    with pytest.raises(ConfigError, match="needs an organisation"):
        store.issue("r1", "relay", org_id="o")
    with pytest.raises(SubjectError):
        store.issue("a.b", "device", org_id="o", entities=("a.b",))
    assert cred.auth.inbox_prefix == "_INBOX.device.e1" and cred.seed_file.read_text().startswith("SU")
    store.revoke("e1")
    assert store.grants() == [] and not cred.seed_file.exists() and not cred.file.exists()
    with pytest.raises(ConfigError, match="no identity"):
        store.revoke("e1")
