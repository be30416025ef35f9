"""Testing agents with pytest: the plugin (plugin.py, the entry point) and its session (session.py)."""
