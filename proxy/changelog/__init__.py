"""Binlog capture and the change store."""
