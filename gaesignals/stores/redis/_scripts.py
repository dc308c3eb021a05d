"""The Lua scripts: the calls Redis lacks, each atomic on the server.

Each runs with ``EVALSHA`` in a batch's pipeline (``EVAL`` once after a ``NOSCRIPT``). In the
scripts that delivery runs, every read of a key that a cache writer may have turned into another
type is made with ``pcall``, so a list where a counter should be can only make that one read or
bump a no-op, never abort a script half way (Redis keeps the writes a failing script made before
its error) nor fail the batch around it.
"""

from __future__ import annotations

import hashlib
from typing import Any

# KEYS[1]; ARGV: sha1 hex of the value read, the new value, expiry in seconds (0: none).
CAS = b"""
local ok, current = pcall(redis.call, 'GET', KEYS[1])
if not ok or not current or redis.sha1hex(current) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS[1]; ARGV: the bytes to append, the largest value allowed. APPEND keeps the key's TTL.
# A key of another type fails the script (WRONGTYPE) before it writes: the sender is told.
APPEND = b"""
if redis.call('STRLEN', KEYS[1]) + string.len(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('APPEND', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1]; ARGV: the delta. A missing counter is created holding max(delta, 0); a negative
# delta stops at 0; a key holding anything but up to 20 decimal digits (maybe then spaces) is
# left alone.
INCR = b"""
local ok, current = pcall(redis.call, 'GET', KEYS[1])
if not ok then return 0 end
local delta = tonumber(ARGV[1])
if not current then
  redis.call('SET', KEYS[1], string.format('%d', math.max(delta, 0)))
  return 1
end
local digits = string.match(current, '^(%d+) *$')
if not digits or #digits > 20 then return 0 end
redis.call('SET', KEYS[1], string.format('%d', math.max(tonumber(digits) + delta, 0)), 'KEEPTTL')
return 1
"""

# A weak take of signals that share a server (on a cluster: a hash slot). ARGV[1] is how many
# groups (signals), ARGV[2] the time (Unix ms) that decides what is due; then, per group, six
# ARGV: how many keys to read first (a lost check's counters), how many queue keys, '1' if two
# counters (accounted, delivered) follow them in KEYS, what the first queue holds once emptied
# (a spread signal's marker, or ''), how many payload frames the group may give (-1: all) and
# which queue to take first (0-based; the others follow round in order). Each queue that holds
# more is emptied but for its frames not due yet (a not-before time, metadata type 1, after
# ARGV[2]), kept in order after that; its other whole frames but spread markers and
# cancellations, walked by their headers from the start (see gaesignals.frames), are counted
# into both counters. Once the group has given its limit, the walk stops at the next payload
# frame: from there on the queue is kept as it is. Returns, per group in order: the values
# read, the queues' values (false: none; a queue cut short gives what was taken, or all it
# held if the group read keys first) and the frames counted in each queue; then, for each
# queue whose walk stopped before its end, its index in KEYS (negative: cut at the limit;
# positive: garbage, and frames after it are not kept by the script) and where (a byte
# offset) the walk stopped.
TAKE = b"""
local function get(key)
  local ok, value = pcall(redis.call, 'GET', key)
  if ok and value then return value end
  return false
end
local function due_at(value, m, stop)
  local due = 0
  while m + 2 <= stop do
    local t, l = string.byte(value, m, m + 1)
    if m + 2 + l > stop then break end
    if t == 1 and l == 8 then
      due = 0
      for i = m + 2, m + 9 do due = due * 256 + string.byte(value, i) end
    end
    m = m + 2 + l
  end
  return due
end
local function frames(value, now, quota)
  local count, at, size, kept, cut = 0, 1, #value, nil, false
  while at + 23 <= size do
    local m1, m2, version, flags, _, _, n1, n2, l1, l2, l3, l4 = string.byte(value, at, at + 11)
    if m1 ~= 0xA7 or m2 ~= 0x5C or version ~= 3 or flags > 15 then break end
    local head = 20
    if flags % 2 == 1 then head = 54 end  -- header, key id, tag
    local meta = n1 * 256 + n2
    local length = head + meta + 4 + ((l1 * 256 + l2) * 256 + l3) * 256 + l4
    if at + length - 1 > size then break end
    if meta > 0 and due_at(value, at + head, at + head + meta) > now then
      kept = kept or {}
      kept[#kept + 1] = string.sub(value, at, at + length - 1)
    elseif flags < 4 then  -- bits 2 and 3 (4, 8) mark a spread marker, a cancellation
      if count == quota then
        cut = true
        break
      end
      count = count + 1
    end
    at = at + length
  end
  if kept then return count, at - 1, table.concat(kept), cut end
  return count, at - 1, '', cut
end
local out, k, now, stopped = {}, 0, tonumber(ARGV[2]), {}
for g = 1, tonumber(ARGV[1]) do
  local a = 6 * g - 4
  local nread, nqueue = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local marker, limit, first = ARGV[a + 4], tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  for i = 1, nread do out[#out + 1] = get(KEYS[k + i]) end
  k = k + nread
  local values, counts, total = {}, {}, 0
  for j = 0, nqueue - 1 do
    local i = (first + j) % nqueue + 1
    local key = KEYS[k + i]
    local value = get(key)
    local count, reach = 0, 0
    local left = ''
    if i == 1 then left = marker end
    if value and #value > 0 and value ~= left then
      local kept, cut
      local quota = -1
      if limit >= 0 then quota = limit - total end
      count, reach, kept, cut = frames(value, now, quota)
      local rest, whole = left .. kept, value
      if cut then
        stopped[#stopped + 1] = -(k + i)
        stopped[#stopped + 1] = reach
        rest = rest .. string.sub(whole, reach + 1)
        if nread == 0 then value = string.sub(whole, 1, reach) end
      elseif reach < #whole then
        stopped[#stopped + 1] = k + i
        stopped[#stopped + 1] = reach
      end
      if rest == '' then redis.call('DEL', key)
      elseif rest ~= whole then redis.call('SET', key, rest) end
      total = total + count
    end
    values[i] = value
    counts[i] = count
  end
  for i = 1, nqueue do out[#out + 1] = values[i] end
  k = k + nqueue
  if ARGV[a + 3] == '1' then
    if total > 0 then
      pcall(redis.call, 'INCRBY', KEYS[k + 1], total)
      pcall(redis.call, 'INCRBY', KEYS[k + 2], total)
    end
    k = k + 2
  end
  for i = 1, nqueue do out[#out + 1] = counts[i] end
end
for _, v in ipairs(stopped) do out[#out + 1] = v end
return out
"""

# KEYS[1]; ARGV: the length of the head taken, its sha1 hex, the bytes to keep in its place.
# A missing key is created holding what is kept.
ACKNOWLEDGE = b"""
local length = tonumber(ARGV[1])
local ok, current = pcall(redis.call, 'GET', KEYS[1])
if not ok then return 0 end
if not current then
  if #ARGV[3] > 0 then redis.call('SET', KEYS[1], ARGV[3]) end
  return 1
end
if #current < length or redis.sha1hex(string.sub(current, 1, length)) ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3] .. string.sub(current, length + 1), 'KEEPTTL')
return 1
"""

#: Each script by its SHA-1 (what EVALSHA names), and the reverse.
SCRIPTS = {
    hashlib.sha1(script).hexdigest(): script for script in (CAS, APPEND, INCR, TAKE, ACKNOWLEDGE)
}
SHA = {script: sha for sha, script in SCRIPTS.items()}


def script(source: bytes, keys: tuple[str, ...], *args: Any) -> tuple[Any, ...]:
    """The EVALSHA command running ``source`` over ``keys`` with ``args``."""
    return ("EVALSHA", SHA[source], len(keys), *keys, *args)
