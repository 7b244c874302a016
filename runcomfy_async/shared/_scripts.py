"""The Lua scripts behind :class:`~runcomfy_async.shared.RedisLimits`.

Each runs atomically inside Redis, so every process naming the same key sees
one bucket and one set of slots. Times come from Redis's own clock
(``TIME``), so processes on machines whose clocks disagree still agree on
when a token is due or a lease has expired.

The bucket is a hash with the fields

``tokens``, ``stamp``           the token bucket, refilled at ``rate`` (burst: half a second's)
``rate``                        the current (adapted) rate, requests per second
``paused_until``                nobody gets a token before (a 429's Retry-After)
``last_cut``                    when the rate was last halved (once a second at most)
``last_limited``, ``peak``      the rate that drew the last 429 (none yet: slow start),
                                and the highest such
``win_start/total/checks``      grants in the current one-second window, for the checks' share
``granted``, ``rate_limited``   counters, for tests and dashboards

Submitters that wait register in a sorted set (member: waiter id, score: when
the registration lapses); while any is registered, checks get a token only
while they hold less than their guaranteed share of the window's grants.
Slots are a sorted set too: member lease id, score the lease's expiry in ms;
beside them a hash holds the adapted ``capacity`` (lowered by a 429 to a
submit, regrown by one every few finished jobs) and ``since_grow``.
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE",
    "ACQUIRE_SLOT",
    "IN_FLIGHT",
    "RATE_LIMITED",
    "RENEW",
    "SLOT_FINISHED",
    "SLOT_LIMITED",
    "SUCCESS",
]

# Loads the bucket, refills it at the current rate, and defines save().
# ARGV[1] is the configured (starting) rate, ARGV[2] the floor.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max_rate = tonumber(ARGV[1])
local min_rate = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp', 'rate', 'paused_until',
  'last_cut', 'last_limited', 'peak', 'win_start', 'win_total', 'win_checks')
local rate = tonumber(b[3]) or max_rate
-- Half a second's worth (the in-memory budget allows a second's): the grants of
-- many processes reach the server with uneven delays, and a burst as big as the
-- server's own would land right at its edge.
local function burst_for(r) return math.max(1, math.min(r / 2, 50)) end
local tokens = tonumber(b[1]) or burst_for(rate)
local stamp = tonumber(b[2]) or now
local paused = tonumber(b[4]) or 0
local last_cut = tonumber(b[5]) or -1e18
local last_limited = tonumber(b[6])
local peak = tonumber(b[7]) or 0
local win_start = tonumber(b[8]) or now
local win_total = tonumber(b[9]) or 0
local win_checks = tonumber(b[10]) or 0
if now > stamp then
  tokens = math.min(burst_for(rate), tokens + (now - stamp) * rate)
  stamp = now
end
local function save()
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(stamp),
    'rate', tostring(rate), 'paused_until', tostring(paused), 'last_cut', tostring(last_cut),
    'peak', tostring(peak), 'win_start', tostring(win_start),
    'win_total', tostring(win_total), 'win_checks', tostring(win_checks))
  if last_limited then
    redis.call('HSET', KEYS[1], 'last_limited', tostring(last_limited))
  end
  -- An account nobody uses for a day forgets its bucket.
  redis.call('EXPIRE', KEYS[1], 86400)
end
"""

ACQUIRE = (
    _PRELUDE
    + """
-- KEYS[2]: waiting submitters. ARGV[3]: priority (0 submit, 1 cancel, 2 check),
-- ARGV[4]: this waiter's id, ARGV[5]: the checks' guaranteed share of grants.
-- Returns {0, rate} when a token was granted, else {microseconds to wait before
-- asking again, rate}.
local prio = tonumber(ARGV[3])
local waiter = ARGV[4]
local share = tonumber(ARGV[5])
if now - win_start >= 1 then
  win_start = now
  win_total = 0
  win_checks = 0
end
local wait = 0
if now < paused then
  wait = paused - now
elseif prio >= 2 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) > 0 and win_checks >= share * (win_total + 1) then
    -- Submits first; this check asks again after one token's time.
    wait = 1 / rate
  end
end
if wait == 0 then
  if tokens >= 1 then
    tokens = tokens - 1
    win_total = win_total + 1
    if prio >= 2 then win_checks = win_checks + 1 end
    redis.call('HINCRBY', KEYS[1], 'granted', 1)
    if prio < 2 then redis.call('ZREM', KEYS[2], waiter) end
  else
    wait = (1 - tokens) / rate
  end
end
if wait > 0 and prio < 2 then
  redis.call('ZADD', KEYS[2], now + wait + 2, waiter)
end
save()
return {math.ceil(wait * 1000000), tostring(rate)}
"""
)

SUCCESS = (
    _PRELUDE
    + """
-- ARGV[3]: how many answers that were not a 429 to count; ARGV[4]: how many of
-- them came back while callers of the reporting process waited for tokens
-- (demand past the rate); ARGV[5]: the ceiling of growth; ARGV[6]: the additive
-- increase (requests/s per second of demand); ARGV[7]: slow start's doubling
-- time in seconds. The in-memory budget's growth rule (_limits.py, rules 2 and
-- 5): under demand, slow start until the first 429 (ln 2 / doubling an answer),
-- additive increase after it; a cut is won back 2% an answer, 0.1% an answer
-- within 10% of the rate that drew it (past the starting rate only under demand).
local n = tonumber(ARGV[3])
local demand = tonumber(ARGV[4]) or 0
local ceiling = tonumber(ARGV[5]) or max_rate
local increase = tonumber(ARGV[6]) or (max_rate / 4)
local doubling = tonumber(ARGV[7]) or 0.25
local changed = false
for i = 1, n do
  if rate >= ceiling then break end
  local waiting = i <= demand
  local new = rate
  if last_limited and 0.9 * last_limited <= rate and rate < 1.1 * last_limited then
    local cap = ceiling
    if not waiting then cap = math.min(ceiling, max_rate) end
    if rate < cap then new = math.min(cap, rate * 1.001) end
  elseif last_limited and rate < max_rate then
    new = math.min(ceiling, max_rate, rate + math.max(rate * 0.02, 0.02))
  elseif waiting then
    local step = increase / rate
    if not last_limited then step = math.max(step, math.log(2) / doubling) end
    new = math.min(ceiling, rate + step)
  end
  if new ~= rate then
    rate = new
    changed = true
  end
end
if changed then
  tokens = math.min(tokens, burst_for(rate))
  save()
end
return tostring(rate)
"""
)

RATE_LIMITED = (
    _PRELUDE
    + """
-- ARGV[3]: Retry-After in seconds, or a negative number when the answer had none;
-- ARGV[4]: how many 429s this reports (a batch of them is one signal).
-- Halves the shared rate at most once a second and pauses every process.
local retry_after = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], 'rate_limited', tonumber(ARGV[4]) or 1)
if now >= paused and now - last_cut >= 1 then
  last_cut = now
  last_limited = rate
  peak = math.max(peak, rate)
  rate = math.max(min_rate, rate * 0.5)
  tokens = math.min(tokens, 0)
end
local pause = retry_after
if pause < 0 then pause = 1 / math.max(rate, 1e-9) end
paused = math.max(paused, now + pause)
save()
return tostring(rate)
"""
)

ACQUIRE_SLOT = """
-- KEYS[1]: the slots, KEYS[2]: the adapted capacity. ARGV: lease id, lease length in
-- ms, configured capacity, force (1: adopt past capacity). Expired leases (their
-- process died) are dropped first.
-- Returns {1, capacity} when the lease was taken, {0, capacity} when the cap is full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[3])
cap = math.min(cap, tonumber(redis.call('HGET', KEYS[2], 'capacity')) or cap)
if ARGV[4] == '1' or redis.call('ZCARD', KEYS[1]) < cap then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2 + 1000)
  return {1, cap}
end
return {0, cap}
"""

RENEW = """
-- KEYS[1]: the slots. ARGV[1]: lease length in ms, ARGV[2..]: leases to extend.
-- Returns the leases that were gone (expired, their slot reclaimed): they are taken
-- back, even past the cap, since their jobs are still in flight.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not score or tonumber(score) <= now then
    table.insert(lost, ARGV[i])
  end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2 + 1000)
return lost
"""

SLOT_LIMITED = """
-- KEYS[1]: the slots, KEYS[2]: the adapted capacity. ARGV[1]: configured capacity.
-- A 429 to a submit: the account's concurrency limit is at most what is in flight now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(redis.call('HGET', KEYS[2], 'capacity')) or tonumber(ARGV[1])
cap = math.max(1, math.min(cap, redis.call('ZCARD', KEYS[1]) - 1))
redis.call('HSET', KEYS[2], 'capacity', cap, 'since_grow', 0)
redis.call('EXPIRE', KEYS[2], 86400)
return cap
"""

SLOT_FINISHED = """
-- KEYS[1]: the adapted capacity. ARGV: configured capacity, jobs finished, grow every.
-- Wins capacity back slowly: one slot per ARGV[3] finished jobs, up to the configured cap.
local ceiling = tonumber(ARGV[1])
local cap = tonumber(redis.call('HGET', KEYS[1], 'capacity')) or ceiling
if cap >= ceiling then return cap end
local since = tonumber(redis.call('HGET', KEYS[1], 'since_grow')) or 0
since = since + tonumber(ARGV[2])
local every = tonumber(ARGV[3])
while since >= every and cap < ceiling do
  since = since - every
  cap = cap + 1
end
redis.call('HSET', KEYS[1], 'capacity', cap, 'since_grow', since)
redis.call('EXPIRE', KEYS[1], 86400)
return cap
"""

IN_FLIGHT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
