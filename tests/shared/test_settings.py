import pytest
from pydantic import ValidationError

from coder.services.secrets.config import SecretsSettings
from coder.shared.settings import Environment, PlatformSettings, load_target_settings


def test_development_defaults_are_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRETS_MASTER_KEYS", raising=False)
    with pytest.raises(ValueError, match="SECRETS_MASTER_KEYS still has its development default"):
        load_target_settings(SecretsSettings, Environment.PRODUCTION)


def test_development_defaults_are_fine_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRETS_MASTER_KEYS", raising=False)
    assert load_target_settings(SecretsSettings, Environment.DEVELOPMENT).active_key_id == "dev"


def test_the_environment_is_the_platforms_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """CODER_ENVIRONMENT is read by PlatformSettings only: a target's settings do not read it again."""
    monkeypatch.setenv("CODER_ENVIRONMENT", "production")
    monkeypatch.delenv("SECRETS_MASTER_KEYS", raising=False)
    assert PlatformSettings().environment is Environment.PRODUCTION
    assert SecretsSettings().active_key_id == "dev"  # refusing is load_target_settings' job
    assert "environment" not in SecretsSettings.model_fields


def test_malformed_keyring_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS_MASTER_KEYS", '{"k": "too-short"}')
    with pytest.raises(ValidationError, match="master_keys"):
        SecretsSettings()


def test_trusted_proxies_are_comma_separated_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODER_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1, 2001:db8::/32,")
    assert PlatformSettings().trusted_proxies == ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
    # A network written with host bits is its network (uvicorn would take it for a host name).
    monkeypatch.setenv("CODER_TRUSTED_PROXIES", "10.1.2.3/8")
    assert PlatformSettings().trusted_proxies == ["10.0.0.0/8"]
    monkeypatch.setenv("CODER_TRUSTED_PROXIES", "10.0.0.0/8,ingress")
    with pytest.raises(ValidationError, match="'ingress' is not an IP address or CIDR"):
        PlatformSettings()
    monkeypatch.delenv("CODER_TRUSTED_PROXIES")
    assert PlatformSettings().trusted_proxies == []
