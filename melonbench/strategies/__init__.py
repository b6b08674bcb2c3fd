"""Online update strategies and their registry."""
