"""target-ssl: pretrain."""
