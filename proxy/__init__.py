"""auroratrack: an Aurora-style Backtrack for stock MySQL and MariaDB."""
