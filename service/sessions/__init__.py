"""Streaming sessions: their values, the store in memory on the serving device, the store in
Redis, and the read-through cache that joins them."""
