"""target-ssl: transfer."""
