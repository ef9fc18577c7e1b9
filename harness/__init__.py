"""The harness: typed run configuration, building engines from it, running and recording."""
