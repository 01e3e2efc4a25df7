"""The Lua scripts of the Redis session store (`service.sessions.redis_store`): each runs atomically
in Redis, so two replicas can never both advance, restart or remove one session at once."""

# KEYS: session, index. ARGV: blob, step, ttl ms, max sessions, replace ("1"), index member,
# epoch.
CREATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exists = redis.call('EXISTS', KEYS[1]) == 1
local ended = redis.call('HGET', KEYS[1], 'ended') == '1'
if exists and not ended and ARGV[5] ~= '1' then return 'taken' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if (not exists or ended) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 'full'
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'blob', ARGV[1], 'epoch', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[6])
return 'ok'
"""

# KEYS: session, index. ARGV: from step, new step, blob, ttl ms, index member, ended ("1"),
# epoch. Returns {1, new step} when committed, {0, current step} when the session moved on
# meanwhile, {0, -1} when it is gone (closed, expired, ended), {0, -2} when the id was opened
# anew (another epoch), {0, -3} when its step is not a number (damaged by hand).
COMMIT = """
local at = redis.call('HMGET', KEYS[1], 'step', 'ended', 'epoch')
local cur = at[1]
if not cur or at[2] == '1' then return {0, -1} end
if (at[3] or '') ~= ARGV[7] then return {0, -2} end
if not tonumber(cur) then return {0, -3} end
if cur ~= ARGV[1] then return {0, tonumber(cur)} end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'blob', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'ended', '1')
  redis.call('ZREM', KEYS[2], ARGV[5])
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
end
return {1, tonumber(ARGV[2])}
"""

# KEYS: session, index. ARGV: epoch, hold ms, index member. Keeps a session that a chunk is
# about to run from expiring before its commit: 1, or 0 if it is gone or opened anew.
HOLD = """
local at = redis.call('HMGET', KEYS[1], 'step', 'ended', 'epoch')
if not at[1] or at[2] == '1' or (at[3] or '') ~= ARGV[1] then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
end
return 1
"""

# KEYS: session, index. ARGV: index member. 1 if an open session was deleted, else 0.
DELETE = """
local open = redis.call('HGET', KEYS[1], 'step') and redis.call('HGET', KEYS[1], 'ended') ~= '1'
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if open then return 1 end
return 0
"""

# KEYS: a probe key, index. ARGV: index member. Every command the other scripts run, so that a
# Redis user that lacks one is found by readiness (Redis checks a script's commands as it runs
# them), on a key of rnn-serve's own prefix.
PROBE = """
redis.call('TIME')
redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], 'step', '0')
redis.call('HGET', KEYS[1], 'step')
redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 1000)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '-inf')
redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[1])
return 1
"""
