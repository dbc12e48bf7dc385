"""The upload node: receives bytes, checks them before keeping them, hands originals to storage."""
