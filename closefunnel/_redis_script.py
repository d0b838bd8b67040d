"""
The shared gate's one server-side script: the rules of :class:`closefunnel._budget.Budget`
run inside Redis, atomically, on Redis's own clock (``TIME``), over a hash of the same
fields. Each call settles the permits given back since the last one, then grants up to
the number of permits asked for, so a busy process pays about one round trip a request.

The rules are the Budget's, field for field (the names below are its attributes); a
differential test drives both with the same events and compares them after each step.
Where the two differ, on purpose:

- **When a window rolls.** The script calls ``ready_at()`` at the end of every call (for
  the wait it reports), so an ended window rolls at the first call after its end, even
  one that only settles; the in-process gate rolls it when a caller asks or the queue is
  dispatched. A roll subtracts the permits in flight at that moment, so the two can guess
  a different budget for the new window when permits are settled in between.
- **Which seq a settle sees.** A 429's ``p_after_seq`` and an answer's "granted since"
  (``seq - 1 - seen``) use the global ``seq`` when the settle reaches Redis, which counts
  the permits other processes were granted between the answer's arrival and its settle.
  In process they use ``seq`` at the answer's arrival. The shared figure is the more
  cautious one (a lower budget; answers to those permits teach nothing about the pause).
- **Only here:** leases and their expiry (an expired lease counts as a request that
  failed, and its late answer is still learned from, once), the fairness share between
  the processes waiting, and settling at most once (below).

A settle is applied at most once. The client sends a settle again when its script call
failed or timed out on the client's side, which can happen after Redis ran it; the first
settle removes its lease (or the token of its expired lease) atomically, and a settle
whose token is in neither set changes nothing.

KEYS: [1] the state hash, [2] the leases (token -> expiry), [3] the leases' seq numbers,
[4] the processes waiting (id -> when last seen), [5] the tokens of expired leases not
settled yet (token -> when to forget it).
ARGV: max_hold, lease_ttl, key_ttl, settle count, then 13 fields per settle
(token, seq, seen, observed, status, has_info, limit, remaining, reset, pause, jitter,
refund, seconds since the answer arrived), then the number of permits wanted, then
that many fresh tokens, then the calling process's id and whether it wants none now.
Returns strings: now, asked wait, wait, budget, window end, pause until, probe, in flight,
rate limited, grant count, then (token, seq, seen) per grant.

Needs Redis >= 4.0 (the multi-field ``HSET``); on 4.x, where a script's writes after
``TIME`` are refused unless its effects are replicated, it asks for that first.
"""

from __future__ import annotations

from typing import Final

__all__ = ["POLL", "STEP"]

#: Seconds between looks when another process's probe or cold start holds the gate:
#: nothing wakes this process when that answer arrives elsewhere.
POLL: Final = 0.01

STEP: Final = """
local COLD_START = 4
local MARGIN = 0.002
local POLL = __POLL__
-- Redis >= 5 replicates a script's effects, so TIME may precede writes; older servers
-- need to be told (the call is gone or a no-op on newer ones).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max_hold = tonumber(ARGV[1])
local lease_ttl = tonumber(ARGV[2])
local key_ttl = tonumber(ARGV[3])
-- When the answer being learned from arrived (its settle says how long ago).
local at = now

local raw = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local function num(k, d) local v = h[k]; if v == nil then return d end; return tonumber(v) end
local function opt(k) local v = h[k]; if v == nil then return nil end; return tonumber(v) end
local function bool(k, d) local v = h[k]; if v == nil then return d end; return v == '1' end

local seq, seen, rate_limited = num('seq', 0), num('seen', 0), num('rate_limited', 0)
local headers_seen = bool('headers_seen', false)
local cold, cold_sent = bool('cold', true), num('cold_sent', 0)
local w_end, w_asked, w_budget = opt('w_end'), opt('w_asked_end'), opt('w_budget')
local w_confirmed, w_limit = bool('w_confirmed', false), opt('w_limit')
local w_length = num('w_length', 0)
local w_count, w_accepted = num('w_count', 0), num('w_accepted', 0)
local w_before = num('w_accepted_before', 0)
local p_until, p_asked, p_probe = num('p_until', 0), num('p_asked_until', 0), bool('p_probe', false)
local p_after, p_answered = num('p_after_seq', 0), num('p_answered', 0)

local function release(s, refund, settled)
  if settled then seen = seen + 1 end
  if not refund then cold = false elseif cold then cold_sent = cold_sent - 1 end
  if refund and w_budget ~= nil then w_budget = w_budget + 1 end
  if p_probe and not refund and s > p_after then p_probe = false end
end

-- Leases past their expiry: a worker died holding them; each is a request that failed.
-- Their tokens are kept a while (KEYS[5]) so that an answer arriving late is still learned
-- from, once.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, token in ipairs(expired) do
  local s = tonumber(redis.call('HGET', KEYS[3], token) or '0')
  redis.call('ZREM', KEYS[2], token)
  redis.call('HDEL', KEYS[3], token)
  redis.call('ZADD', KEYS[5], now + key_ttl, token)
  release(s, false, true)
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[2])

local function learn_from_pause(pause)
  if p_answered > 0 then w_limit = p_answered end
  if pause <= max_hold then w_length = math.max(w_length, pause) end
  if w_limit ~= nil then
    w_budget = w_limit
    w_end = p_until + w_length
    w_asked = w_end
  end
end

local function on_429(has_info, pause, jitter)
  rate_limited = rate_limited + 1
  p_after = seq
  local asked = at + pause + MARGIN + jitter
  p_asked = math.max(p_asked, asked)
  p_until = math.max(p_until, math.min(asked, at + max_hold))
  p_probe = true
  w_confirmed = false
  if (not has_info) and (not headers_seen) and pause > 0 then
    learn_from_pause(pause)
  else
    w_budget, w_end, w_asked = nil, nil, nil
  end
  p_answered = 0
end

local function learn(s, sn, limit, remaining, reset)
  if limit ~= nil then w_limit = limit end
  local r = math.min(reset, max_hold)
  if reset <= max_hold then w_length = math.max(w_length, r) end
  local ends = at + r
  local est = remaining - (seq - 1 - sn)
  local tolerance = 0.5 * w_length
  if w_end == nil or ends > w_end + tolerance then
    w_end, w_asked, w_budget = ends, at + reset, est
    w_before, w_accepted = w_accepted, 0
    w_count = w_count + 1
  elseif ends < w_end - tolerance then
    w_before = w_before + 1
    return
  else
    if ends < w_end then w_end, w_asked = ends, at + reset end
    if w_confirmed and w_budget ~= nil then
      w_budget = math.max(w_budget, est)
    else
      w_budget = est
    end
  end
  w_accepted = w_accepted + 1
  w_confirmed = true
end

local function observe(s, sn, status, has_info, limit, remaining, reset, pause, jitter)
  cold = false
  seen = seen + 1
  if status == 429 then on_429(has_info, pause, jitter); return end
  if s <= p_after then return end
  p_probe = false
  p_answered = p_answered + 1
  if has_info then
    headers_seen = true
    learn(s, sn, limit, remaining, reset)
  end
end

local n = tonumber(ARGV[4])
local i = 5
for _ = 1, n do
  local token = ARGV[i]
  local s, sn = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local observed, refund = ARGV[i + 3] == '1', ARGV[i + 11] == '1'
  at = now - math.max(0, tonumber(ARGV[i + 12]))
  -- At most once: a settle takes its lease (or its expired token) away as it is applied,
  -- so the same settle sent again (its first call timed out on the client's side after
  -- Redis ran it) finds neither and changes nothing.
  local live = redis.call('ZREM', KEYS[2], token) == 1
  redis.call('HDEL', KEYS[3], token)
  local late = (not live) and redis.call('ZREM', KEYS[5], token) == 1
  if observed and (live or late) then
    local limit = nil
    if ARGV[i + 6] ~= '' then limit = tonumber(ARGV[i + 6]) end
    observe(s, sn, tonumber(ARGV[i + 4]), ARGV[i + 5] == '1', limit, tonumber(ARGV[i + 7]),
            tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9]), tonumber(ARGV[i + 10]))
    if late then seen = seen - 1 end  -- its expiry counted it settled already
  end
  if live then
    in_flight = in_flight - 1
    release(s, refund, not observed)
  end
  i = i + 13
end
at = now

local function roll()
  w_before, w_accepted = w_accepted, 0
  if w_end ~= nil and w_asked ~= nil and w_asked > w_end then
    w_budget, w_end, w_asked = nil, nil, nil
    p_probe, p_after = true, seq
  elseif w_limit == nil or w_end == nil or w_length <= 0 then
    w_budget, w_end, w_asked = nil, nil, nil
  else
    local passed = math.floor((now - w_end) / w_length) + 1
    w_end = w_end + math.max(1, passed) * w_length
    w_asked = w_end
    local guess
    if not headers_seen then guess = w_limit
    elseif w_count > 1 then guess = w_before
    else guess = COLD_START end
    w_budget = math.max(1, math.min(w_limit, guess) - in_flight)
    w_count = w_count + 1
  end
  w_confirmed = false
end

local function ready_at()
  if w_budget ~= nil and w_budget < 1 then
    if w_end ~= nil and now < w_end + MARGIN then return math.max(p_until, w_end + MARGIN) end
    roll()
  end
  return p_until
end

local want = tonumber(ARGV[i])
local grants = {}
local wait = 0
-- Fairness: while several processes wait, one call takes at most its share of what is
-- left, so a process that happens to ask first at every window's start cannot starve
-- the others; what nobody else asks for is still taken by the next call.
local pid, idle = ARGV[i + want + 1], ARGV[i + want + 2] == '1'
if idle then redis.call('ZREM', KEYS[4], pid) else redis.call('ZADD', KEYS[4], now, pid) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - math.max(1, 2 * w_length))
local waiting = redis.call('ZCARD', KEYS[4])
local share = nil
for k = 1, want do
  if (p_probe and in_flight > 0) or (cold and cold_sent >= COLD_START) then wait = POLL; break end
  local ready = ready_at()
  if ready > now then wait = ready - now; break end
  if share == nil and waiting > 1 and w_budget ~= nil then
    share = math.max(1, math.ceil(w_budget / waiting))
  end
  if share ~= nil and k > share then wait = POLL; break end
  local token = ARGV[i + k]
  if cold then cold_sent = cold_sent + 1 end
  seq = seq + 1
  in_flight = in_flight + 1
  if w_budget ~= nil then w_budget = w_budget - 1 end
  redis.call('ZADD', KEYS[2], now + lease_ttl, token)
  redis.call('HSET', KEYS[3], token, seq)
  grants[#grants + 1] = token
  grants[#grants + 1] = tostring(seq)
  grants[#grants + 1] = tostring(seen)
end

local asked_wait = 0
local ready = ready_at()
if ready > now then
  local asked = math.max(ready, p_asked)
  if w_budget ~= nil and w_budget < 1 and w_asked ~= nil then
    asked = math.max(asked, w_asked + MARGIN)
  end
  asked_wait = asked - now
end

local function f(x) if x == nil then return '' end; return string.format('%.17g', x) end
local function b(x) if x then return '1' end; return '0' end
local out = {'seq', seq, 'seen', seen, 'rate_limited', rate_limited,
  'headers_seen', b(headers_seen),
  'cold', b(cold), 'cold_sent', cold_sent, 'w_confirmed', b(w_confirmed), 'w_length', f(w_length),
  'w_count', w_count, 'w_accepted', w_accepted, 'w_accepted_before', w_before,
  'p_until', f(p_until), 'p_asked_until', f(p_asked), 'p_probe', b(p_probe),
  'p_after_seq', p_after, 'p_answered', p_answered}
redis.call('HSET', KEYS[1], unpack(out))
local function put(k, v)
  if v == nil then redis.call('HDEL', KEYS[1], k) else redis.call('HSET', KEYS[1], k, f(v)) end
end
put('w_end', w_end); put('w_asked_end', w_asked); put('w_budget', w_budget); put('w_limit', w_limit)
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, math.floor(key_ttl * 1000)) end

local reply = {f(now), f(asked_wait), f(wait), f(w_budget), f(w_end), f(p_until), b(p_probe),
  tostring(in_flight), tostring(rate_limited), tostring(#grants / 3)}
for _, g in ipairs(grants) do reply[#reply + 1] = g end
return reply
""".replace("__POLL__", repr(POLL))
