"""Read a secret where its SecretRef says, at use, on the machine that needs it.

    read_secret(settings.kafka.connection_string, key="kafka.connection_string", purpose="Event Hubs PLAIN")

- `vault` + `secret`, vault an https URL: an Azure Key Vault, read through Fabric's
  `notebookutils.credentials.getSecret(vault_url, secret)` (a Spark Job Definition cannot inject
  environment variables, so this is how Fabric jobs get secrets);
- `vault` + `secret`, any other vault: a Databricks secret scope, read through
  `dbutils.secrets.get(scope, key)` (`databricks.sdk.runtime` provides dbutils in wheel tasks);
- otherwise the environment variable `env` (locally; on Databricks a cluster can also inject
  `{{secrets/<scope>/<key>}}` into an environment variable, which reaches executors too).

Errors name the setting and where it looked, never a value.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline_lib.config import ConfigError, SecretRef


def is_key_vault(vault: str) -> bool:
    return vault.lower().startswith("https://")


def describe(ref: SecretRef) -> str:
    """Where the secret comes from, for messages and `config show` (never the value)."""
    if ref.vault and ref.secret:
        kind = "Azure Key Vault" if is_key_vault(ref.vault) else "Databricks secret scope"
        return f"{kind} {ref.vault!r}, secret {ref.secret!r}"
    return f"environment variable {ref.env}"


def read_secret(ref: SecretRef, *, key: str, purpose: str) -> str:
    """The secret's value; a ConfigError naming `key` and the source when it cannot be read."""
    if ref.vault and ref.secret:
        reader = _key_vault if is_key_vault(ref.vault) else _secret_scope
        try:
            value = reader(ref.vault, ref.secret)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the platform's reader is this setting's error
            raise ConfigError(
                f"{purpose}: {key} names {describe(ref)}, which could not be read "
                f"({type(exc).__name__}); check the name and that this identity may read it"
            ) from None
        return _clean(str(value or ""), f"{purpose}: {key} names {describe(ref)}")
    value = os.environ.get(str(ref.env))
    if not value:
        raise ConfigError(
            f"{purpose} needs a secret in environment variable {ref.env} (named by {key}.env); "
            f"export it, or set {key}.vault and {key}.secret to read it from a secret scope or Key Vault"
        )
    return _clean(value, f"{purpose}: {key} names {describe(ref)}")


def _clean(value: str, where: str) -> str:
    """The secret without surrounding whitespace (a pasted trailing newline); refused if empty or if
    it still holds a control character, which would end a quoted JAAS value and break the login."""
    value = value.strip()
    if not value:
        raise ConfigError(f"{where}, which is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{where}, which holds a control character (a line break?); store it on one line")
    return value


def _key_vault(vault_url: str, name: str) -> Any:
    try:
        import notebookutils  # type: ignore[import-not-found]  # Fabric's runtime only
    except ImportError:
        raise ConfigError(
            f"Azure Key Vault {vault_url!r} is read through Fabric's notebookutils, which this runtime does "
            "not have; outside Fabric use a Databricks secret scope (vault: <scope>) or env: <VARIABLE>"
        ) from None
    return notebookutils.credentials.getSecret(vault_url, name)


def _secret_scope(scope: str, name: str) -> Any:
    try:
        from databricks.sdk.runtime import dbutils  # type: ignore[import-not-found]  # Databricks runtimes
    except ImportError:
        raise ConfigError(
            f"secret scope {scope!r} is read through Databricks' dbutils, which this runtime does not have; "
            "on Fabric name a Key Vault URL (vault: https://<vault>.vault.azure.net/), elsewhere env: <VARIABLE>"
        ) from None
    return dbutils.secrets.get(scope=scope, key=name)
