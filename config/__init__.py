"""Settings: the one typed object that says where state lives and who the hospital is.

Read from environment variables (prefix ``YUYUE_``) and an optional TOML file
(``yuyue.toml`` in the working directory, or the path in ``YUYUE_CONFIG``).
Importing this package does nothing else: no folders are created here.
"""

from yuyue.config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
