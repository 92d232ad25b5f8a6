"""One module per metric kind, each registering its class (genexp/metrics/registry.py); every module
here is imported on first use of the registry."""
