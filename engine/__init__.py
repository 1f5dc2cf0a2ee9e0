"""target-ssl: engine."""
