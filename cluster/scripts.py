"""The Lua scripts: each check-then-act on a lease is one atomic step in Redis.

A lease's value is ``"<node id>:<fencing token>"``; the token is ``INCR`` of one counter,
taken in the same step as the lease, so a later owner always holds a larger token (also
after a Redis that restarted empty lost the counter: a token is never below the
conversation's ``last`` + 1, which an owner taking its lease back restores). Beside
the lease, ``last`` keeps the token of the conversation's last lease: an owner whose lease
key is gone (Redis restarted empty, or it expired while nobody else took it) takes it back
with the same token only while ``last`` is still its own (or gone too) -- once anyone else
has held the conversation since, the old owner is refused.
"""

#: The take-back shared by RENEW and APPEND. KEYS[1] lease, KEYS[last]; ARGV value, ttl
#: ms, token, last's ttl ms at the positions given.
_TAKE_BACK = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  if cur then return 0 end
  local last = redis.call('GET', KEYS[{last}])
  if last and last ~= ARGV[{token}] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[{ttl}])
  redis.call('SET', KEYS[{last}], ARGV[{token}], 'PX', ARGV[{last_ttl}])
  retaken = 2
end
"""

#: Epoch notices kept (``MAXLEN ~``): a relay that could not read them for longer than it
#: takes to start this many logs misses the oldest.
NOTICES_KEPT = 10_000

#: KEYS: lease, fence counter, last, epoch, the epoch notices. ARGV: node id, ttl ms,
#: last's ttl ms (also the epoch's, when set here), the taker's epoch, the conversation id,
#: notices kept. → ``{token, the log's epoch}`` (the taker's when the log had none), or
#: nil if held.
#:
#: A log started here in the taker's epoch (new, expired, or lost with a Redis that
#: restarted empty) is announced on the notice stream: a mirror elsewhere may be at a seq
#: the new log has not reached, which its relay's read (after that seq) would not see.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local last = tonumber(redis.call('GET', KEYS[3]))
if last and token <= last then
  token = last + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
redis.call('SET', KEYS[3], token, 'PX', ARGV[3])
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[4], epoch, 'PX', ARGV[3])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'c', ARGV[5], 'e', epoch)
end
return {token, epoch}
"""

#: KEYS: lease, last. ARGV: value, ttl ms, token, last's ttl ms. → 1 extended, 2 taken
#: back (see the module docstring), 0 lost.
RENEW = (
    "local retaken = 1\n"
    + _TAKE_BACK.format(last=2, token=3, ttl=2, last_ttl=4)
    + """
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return retaken
"""
)

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

#: The fenced append. KEYS: lease, log, epoch, last. ARGV: lease value, epoch, min id kept
#: (the hub's replay floor: the previous generation's lead-in), the log's ttl ms, the
#: lease's ttl ms, the token, then seq, json pairs; the last ARGV is the writer's clock (ms,
#: for the relay's lag). → 1 appended (2: after taking the lease back), 0 the lease is not
#: ours, -1 the log has another epoch.
#:
#: Idempotent: events the log already holds (seq up to its last entry's) are skipped. The
#: writer sends again what a failed round carried, and a round that timed out may still be
#: applied when a stalled Redis wakes up, before or after the retry.
APPEND = (
    "local retaken = 1\n"
    + _TAKE_BACK.format(last=4, token=6, ttl=5, last_ttl=4)
    + """
local epoch = redis.call('GET', KEYS[3])
if epoch and epoch ~= ARGV[2] then return -1 end
if not epoch then redis.call('SET', KEYS[3], ARGV[2]) end
local sent = ARGV[#ARGV]
local top = 0
local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if tail[1] then top = tonumber(string.match(tail[1][1], '^(%d+)')) end
for i = 7, #ARGV - 1, 2 do
  if tonumber(ARGV[i]) > top then
    redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[3], ARGV[i] .. '-0', 'd', ARGV[i + 1], 't', sent)
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return retaken
"""
)
