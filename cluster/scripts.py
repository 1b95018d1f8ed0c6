"""The Lua scripts: each check-then-act on a lease is one atomic step in Redis.

A lease's value is ``"<node id>:<fencing token>"``; the token is ``INCR`` of one counter,
taken in the same step as the lease, so a later owner always holds a larger token.
"""

#: KEYS: lease, fence counter. ARGV: node id, ttl ms. → the token, or nil if held.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""

#: KEYS: lease. ARGV: value, ttl ms. → 1 extended, 0 lost.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: KEYS: lease. ARGV: value. → 1 released, 0 not ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: A delete: a marker after the last event (``<seq>-1``: it takes no seq), and the log
#: expires soon. KEYS: log, epoch. ARGV: ttl ms.
CLOSE = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 0
if last[1] then seq = tonumber(string.match(last[1][1], '^(%d+)')) end
redis.call('XADD', KEYS[1], seq .. '-1', 'd', '{"type":"_closed"}')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return seq
"""

#: The fenced append. KEYS: lease, log, epoch. ARGV: lease value, epoch, min id kept
#: (the hub's replay floor: the previous generation's lead-in), ttl ms, then seq, json
#: pairs; the last ARGV is the writer's clock (ms, for the relay's lag). → 1 appended, 0 the
#: lease is not ours, -1 the log has another epoch.
APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local epoch = redis.call('GET', KEYS[3])
if epoch and epoch ~= ARGV[2] then return -1 end
if not epoch then redis.call('SET', KEYS[3], ARGV[2]) end
local sent = ARGV[#ARGV]
for i = 5, #ARGV - 1, 2 do
  redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[3], ARGV[i] .. '-0', 'd', ARGV[i + 1], 't', sent)
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
"""
