# Load kvtool's prompt_cache fixture (opt-in, so that pytest runs elsewhere never import kvtool).
pytest_plugins = ["kvtool.check.pytest_plugin"]
