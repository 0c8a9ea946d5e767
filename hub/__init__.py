"""Manifold: one MCP endpoint in front of many upstream MCP servers."""

from hub.app import create_app
from hub.catalog import Catalog
from hub.config import Config, load_config, parse_config
from hub.errors import ConfigError, HubError
from hub.runtime import Hub

__all__ = ["Catalog", "Config", "ConfigError", "Hub", "HubError", "create_app", "load_config", "parse_config"]
