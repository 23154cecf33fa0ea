"""Reads the running stack's config into MeshSettings; the only config code that needs Pulumi."""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

from components.config import ConfigError, MeshSettings, parse_config
from mesh_constants import PROJECT


def load_settings() -> MeshSettings:
    """Every key of the stack, so unknown (misspelt) keys and namespaces are reported too."""
    # Nothing public lists the keys a stack sets (pulumi.Config reads one key at a time). The CLI hands them to
    # the program in PULUMI_CONFIG (get_config_env, public) and the language host, Automation API and mocks load
    # them into runtime_config.CONFIG: this one read of the SDK's config map is the adapter for that gap.
    everything, prefix = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}, f"{PROJECT}:"
    raw = {key.removeprefix(prefix): value for key, value in everything.items() if key.startswith(prefix)}
    secret_keys = frozenset(key for key in raw if runtime_config.is_config_secret(f"{prefix}{key}"))
    try:
        return parse_config(raw, secret_keys, frozenset(key for key in everything if not key.startswith(prefix)))
    except ConfigError as error:
        # RunError prints the message alone: a config mistake is not a crash.
        raise pulumi.RunError(str(error)) from None


def root_ca_key() -> pulumi.Output[str] | None:
    return pulumi.Config(PROJECT).get_secret("rootCaKeyPem")
