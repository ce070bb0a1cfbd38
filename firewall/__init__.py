"""Firewall backends: putting bans into the kernel and taking them out."""
