"""target-ssl: ssl_backbones."""
