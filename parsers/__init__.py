"""Log formats and filters: syslog wire formats, filter definitions and matching. Standard library only."""
