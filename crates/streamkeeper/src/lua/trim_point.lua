-- Computes the ack-based trim point T of a stream and, unless dry-run,
-- trims everything below it — in one script, so no XREADGROUP, XCLAIM or
-- XACK can slip between computing T and trimming.
--
-- For each group g: L = last-delivered ID, P = oldest pending ID (if any);
-- its bound is min(P, next(L)). T is the minimum over all groups: every
-- entry below T has been delivered to and acknowledged by every group.
--
-- KEYS[1]  the stream
-- ARGV[1]  "1" for a dry run (compute T, trim nothing)
--
-- Returns {trimmed, T, bounds} or {0, false} when the stream has no group
-- (then nothing is ack-trimmed) or does not exist. bounds holds each
-- group's {name, bound, pending}, pending 1 when the bound is the group's
-- oldest pending entry (0: its next undelivered one), so the dashboard
-- shows which group holds T from this rule, not a copy of it.
-- IDs are "ms-seq" with 64-bit parts: compare them as decimal strings so
-- no precision is lost in Lua's doubles.
local function num_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function split(id)
  local dash = string.find(id, '-', 1, true)
  return string.sub(id, 1, dash - 1), string.sub(id, dash + 1)
end
local function id_less(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  if am ~= bm then return num_less(am, bm) end
  return num_less(as, bs)
end
-- The decimal string plus one.
local function incr(s)
  local digits = {}
  for i = 1, #s do digits[i] = string.byte(s, i) - 48 end
  local i = #digits
  while i >= 1 do
    if digits[i] < 9 then digits[i] = digits[i] + 1; break end
    digits[i] = 0
    i = i - 1
  end
  local out = (i == 0) and '1' or ''
  for j = 1, #digits do out = out .. digits[j] end
  return out
end
local function next_id(id)
  local ms, seq = split(id)
  if seq == '18446744073709551615' then return incr(ms) .. '-0' end
  return ms .. '-' .. incr(seq)
end

-- XINFO GROUPS, not EXISTS, tells a missing stream: a user granted only
-- stream commands can run this script (docs/design.md §6, "Least
-- privilege").
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) == 'table' and groups.err then
  if string.find(groups.err, 'no such key', 1, true) then
    return {0, false}
  end
  return redis.error_reply(groups.err)
end
if #groups == 0 then
  return {0, false}
end
local t = nil
local bounds = {}
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local bound = next_id(last)
  local pending = 0
  local summary = redis.call('XPENDING', KEYS[1], name)
  if summary[1] > 0 and id_less(summary[2], bound) then
    bound = summary[2]
    pending = 1
  end
  bounds[#bounds + 1] = {name, bound, pending}
  if t == nil or id_less(bound, t) then
    t = bound
  end
end
if ARGV[1] == '1' then
  return {0, t, bounds}
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', t)
return {trimmed, t, bounds}
