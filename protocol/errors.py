"""The error every layer raises for a bad setting. It lives alone at the bottom of protocol so that config,
envspec and security can all raise it without importing each other in a circle."""


class ConfigError(ValueError):
    """A config value is wrong; the message names the field, the value and what is allowed."""
